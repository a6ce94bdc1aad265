"""Help texts laid out for the terminal they are shown on (`porter COMMAND --help`).

A command's docstring is written for the source file: prose broken at about 90 columns and an
`Examples:` paragraph of one command per line. Shown as written, the prose keeps those breaks
and the terminal wraps it again (a ragged right edge at 80 columns, short lines at 120), and
an example longer than the terminal is cut mid-word. So before typer renders a help, its
prose paragraphs become one line each, for rich to wrap at the terminal's width, and each
example longer than the width is broken into shell continuation lines (` \\` and an indent)
between arguments (an option stays with its value), so that it still pastes as one command.
Square brackets are escaped: typer renders help as rich markup, which would swallow
`[gate; up]`.
"""

from __future__ import annotations

import inspect
import os
import re

from rich.markup import escape

# What typer's rich help puts around a command's description (one space each side).
PADDING = 2
CONTINUATION = "    "
# A shell word: quoted strings (with their spaces) and bare words.
WORD = re.compile(r"""(?:"[^"]*"|'[^']*'|\S)+""")


def terminal_width() -> int:
    """The width typer's rich console renders help at."""
    if os.environ.get("TERMINAL_WIDTH", "").isdigit():
        return int(os.environ["TERMINAL_WIDTH"])
    from rich.console import Console

    return Console().width


def _units(command: str) -> list[str]:
    """The command's words, an option kept with its value, an operator with what follows."""
    words = WORD.findall(command)
    units: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        takes_next = word.startswith("-") or word in ("|", "||", "&&", ">", ">>", "<")
        if takes_next and i + 1 < len(words) and not words[i + 1].startswith("-"):
            units.append(f"{word} {words[i + 1]}")
            i += 2
        else:
            units.append(word)
            i += 1
    return units


def wrap_command(command: str, width: int) -> str:
    """One example command in lines of at most `width` columns, joined by ` \\`."""
    if len(command) <= width:
        return command
    lines: list[str] = []
    line = ""
    for unit in _units(command):
        prefix = CONTINUATION if lines else ""
        candidate = f"{line} {unit}" if line else prefix + unit
        if line and len(candidate) + 2 > width:  # room for " \"
            lines.append(line + " \\")
            line = CONTINUATION + unit
        else:
            line = candidate
    return "\n".join([*lines, line])


def layout(doc: str, width: int) -> str:
    """A docstring as porter's help shows it at `width` columns (see the module docstring)."""
    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = [line.strip() for line in paragraph.splitlines()]
        if lines and lines[0] == "Examples:":
            usable = width - PADDING
            paragraphs.append("\n".join([lines[0], *(wrap_command(line, usable) for line in lines[1:])]))
        else:
            paragraphs.append(" ".join(lines))
    return escape("\n\n".join(paragraphs))
