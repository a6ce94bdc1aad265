"""Where a file of the tree fails to parse, said precisely: line, column, the line's text.

libcst's `ParserSyntaxError.raw_line` cannot be trusted (libcst 1.x, its native parser): a
tokenizer error (a stray `$`, an unterminated string, tabs mixed with spaces, a dedent to no
block) comes with line 1, column 0 whatever its place, and a parser error with a line that
need not be the one its own message names ("error at 102:41" with raw_line 103). libcst's own
position is the one in its message, and it is where libcst's parser gave up: often the token
after the mistake. So porter reports the mistake where Python's compiler places it (the line
and column of the token at fault, and for a bracket never closed the line that opened it),
shows that line's text with a caret under the column, and adds libcst's position from its
message. When Python compiles the file and only libcst rejects it (syntax newer than the
installed libcst), libcst's position is the one reported.
"""

from __future__ import annotations

import ast
import re

import libcst as cst

from porter.errors import PorterError

# libcst's parser errors read "parser error: error at LINE:COLUMN: expected ..." (column from 0).
_LIBCST_AT = re.compile(r"(?:parser error: )?error at (\d+):(\d+):?\s*")


def _libcst_position(exc: cst.ParserSyntaxError) -> tuple[int, int] | None:
    """(line, column from 1) as libcst's message says, or None (a tokenizer error)."""
    match = _LIBCST_AT.search(exc.message)
    return (int(match.group(1)), int(match.group(2)) + 1) if match else None


def _python_position(text: str, path: str) -> tuple[int, int, str] | None:
    """(line, column from 1, what is wrong) as Python's compiler says, or None when it compiles."""
    try:
        compile(text, path, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return exc.lineno or 1, max(exc.offset or 1, 1), exc.msg
    except ValueError:  # a NUL byte: Python names no line
        return None
    return None


def _shown(text: str, line: int, column: int) -> str:
    """The line's text with a caret under the column."""
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    prefix = f"  {line} | "
    caret = " " * (len(prefix) + min(column - 1, len(source))) + "^"
    return f"{prefix}{source}\n{caret}"


def syntax_error(path: str, text: str, exc: cst.ParserSyntaxError) -> PorterError:
    """The PorterError for a file of the tree that libcst cannot parse."""
    reason = exc.message.splitlines()[0] if exc.message else "invalid syntax"
    at = _libcst_position(exc)
    libcst_said = f"libcst: {reason}" if at is None else (
        f"libcst gives up at line {at[0]}, column {at[1]}: {_LIBCST_AT.sub('', reason)}"
    )
    python = _python_position(text, path)
    if python is not None:
        line, column, what = python
    elif at is not None:
        line, column, what = at[0], at[1], reason
    else:
        line, column, what = exc.raw_line, exc.raw_column + 1, reason
    return PorterError(
        f"cannot parse {path}: a syntax error at line {line}, column {column}: {what}\n{_shown(text, line, column)}",
        file=f"{path}:{line}",
        construct="valid Python source",
        found=f"a syntax error at line {line}, column {column} ({libcst_said})",
        fix=f"fix line {line} of {path} (python -m py_compile {path} checks it), then run porter again",
    )
