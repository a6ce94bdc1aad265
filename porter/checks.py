"""Checks of a rendered file before anything is written: it compiles, and porter changed
only what its edits are anchored on.

The scope check compares syntax trees (Python's `ast`, so formatting and comments do not
count). Every rewrite declares where it may change code: the body of one function (a
method of a top-level class, or a top-level function), or the module's top-level imports.
Both versions of the file are reduced the same way — the body of every function an edit
is anchored on is replaced by `pass` — and must then be equal statement for statement,
except that, when an edit may change imports, the new version may hold extra top-level
import statements and may import more names in an existing `from X import ...`. So a
rewrite that strays outside its function (another class with the same method name, a
decorator, a signature, a default argument, a module-level statement, a removed import)
fails the check, whatever its bug.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable

from porter.errors import PorterError

# A scope: ("function", class name or None, function name) or ("imports",).
Scope = tuple


def check_compiles(path: str, text: str) -> None:
    try:
        compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as exc:  # a porter bug, never the user's: say so
        raise PorterError(
            f"internal error: porter produced code that does not compile in {path}: {exc}",
            file=path,
            construct="a rendered file that compiles",
            found=f"{exc.msg} at line {exc.lineno}",
            fix="nothing was written; please report this with `porter diff --debug` output",
        ) from exc


def _reduce(module: ast.Module, functions: set[tuple[str | None, str]]) -> list[ast.stmt]:
    """Top-level statements with the bodies of the anchored functions replaced by `pass`."""
    out = []
    for stmt in module.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and (None, stmt.name) in functions:
            stmt.body = [ast.Pass()]
        elif isinstance(stmt, ast.ClassDef):
            for member in stmt.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and (stmt.name, member.name) in functions:
                    member.body = [ast.Pass()]
        out.append(stmt)
    return out


def _is_import(stmt: ast.stmt) -> bool:
    return isinstance(stmt, (ast.Import, ast.ImportFrom))


def _extends(before: ast.stmt, after: ast.stmt) -> bool:
    """`after` is `before`, or the same `from X import` with more names."""
    if ast.dump(before) == ast.dump(after):
        return True
    if not (isinstance(before, ast.ImportFrom) and isinstance(after, ast.ImportFrom)):
        return False
    if (before.module, before.level) != (after.module, after.level):
        return False
    names_before = [(a.name, a.asname) for a in before.names]
    names_after = [(a.name, a.asname) for a in after.names]
    return names_after[: len(names_before)] == names_before


def _describe(stmt: ast.stmt) -> str:
    name = getattr(stmt, "name", None)
    kind = type(stmt).__name__
    return f"{kind} {name}" if name else f"{kind} at line {stmt.lineno}"


def scope_violations(before: str, after: str, scopes: Iterable[Scope]) -> list[str]:
    """What changed outside the scopes; empty when nothing did."""
    scopes = list(scopes)
    functions = {(s[1], s[2]) for s in scopes if s[0] == "function"}
    imports = any(s[0] == "imports" for s in scopes)
    old = _reduce(ast.parse(before), functions)
    new = _reduce(ast.parse(after), functions)
    old_dumps = [ast.dump(s) for s in old]
    new_dumps = [ast.dump(s) for s in new]
    problems: list[str] = []
    matcher = difflib.SequenceMatcher(a=old_dumps, b=new_dumps, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        pending = list(old[i1:i2])
        for stmt in new[j1:j2]:
            if pending and (_extends(pending[0], stmt) if imports else ast.dump(pending[0]) == ast.dump(stmt)):
                pending.pop(0)
            elif imports and _is_import(stmt):
                continue  # an import porter added
            else:
                problems.append(f"{_describe(stmt)} (line {stmt.lineno} of the new file) is new or changed")
        problems.extend(f"{_describe(stmt)} (line {stmt.lineno}) was changed or removed" for stmt in pending)
    return problems


def check_scope(path: str, before: str, after: str, scopes: Iterable[Scope], edits: str) -> None:
    problems = scope_violations(before, after, scopes)
    if problems:
        raise PorterError(
            f"internal error: porter's edits of {path} changed code outside what they are anchored on",
            file=path,
            construct=f"changes only inside: {edits}",
            found="; ".join(problems[:5]),
            fix="nothing was written; please report this with `porter diff --debug` output",
        )
