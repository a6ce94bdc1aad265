"""Whose line failed in a run of a ported tree: the port's or the tree's own code.

A run that stops names the innermost line of the tree it came from. porter's journal
(.porter/journal.json) says which files porter created and, for the files of the tree it
changed, what they held before: a line porter created or changed is the port's; any other
line is the tree's own code, which fails there whatever porter wrote. A line changed since
porter's write (the file on disk is not what porter wrote) is neither: an edit made since.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from porter import journal
from porter.errors import PorterError

PORT, TREE, EDITED = "port", "tree", "edited"


def _lines(data: bytes) -> list[str]:
    return data.decode(errors="replace").splitlines()


def _changed_lines(before: bytes, after: bytes) -> set[int]:
    """The 1-based line numbers of `after` that are not lines of `before` (inserted or replaced)."""
    changed: set[int] = set()
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, _lines(before), _lines(after), autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            changed.update(range(j1 + 1, j2 + 1))
    return changed


def _line_in(before: bytes, after: bytes, line: int) -> int | None:
    """Where line `line` of `after` was in `before` (1-based), or None when it is new in `after`."""
    for tag, i1, _, j1, j2 in difflib.SequenceMatcher(None, _lines(before), _lines(after), autojunk=False).get_opcodes():
        if j1 < line <= j2:
            return i1 + (line - j1) if tag == "equal" else None
    return None


def owner(tree: Path | None, file: str, line: int) -> str | None:
    """PORT, TREE or EDITED (a line changed since porter's write) for `file` (relative to the tree)
    at `line` of the file as it is now; None when the tree has no journal."""
    if tree is None:
        return None
    try:
        applies = journal.read_journal(Path(tree))
    except PorterError:
        return None
    if applies is None:
        return None
    last: dict[str, journal.JournalFile] = {}
    for apply in applies:
        for item in apply.files:
            last[item.path] = item
    written = last.get(Path(file).as_posix())
    if written is None:
        return TREE
    try:
        now = (Path(tree) / file).read_bytes()
    except OSError:
        return None
    if now != written.after:
        line = _line_in(written.after, now, line)
        if line is None:
            return EDITED
    if written.created:
        return PORT
    return PORT if line in _changed_lines(written.before, written.after) else TREE


def described(tree: Path | None, file: str, line: int) -> str:
    """Whose line `file`:`line` is, in words ('' when porter cannot tell)."""
    who = owner(tree, file, line)
    if who == TREE:
        return f"the tree's own code at {file}:{line} (porter did not write that line)"
    if who == PORT:
        return f"the port's code at {file}:{line} (a line porter wrote)"
    if who == EDITED:
        return f"a line edited at {file}:{line} since porter wrote that file"
    return ""
