"""Whose line failed in a run of a ported tree: the port's or the tree's own code.

A run that stops names the innermost line of the tree it came from. porter's journal
(.porter/journal.json) says which files porter created and, for the files of the tree it
changed, what they held before: a line porter created or changed is the port's; any other
line is the tree's own code, which fails there whatever porter wrote.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from porter import journal
from porter.errors import PorterError

PORT, TREE = "port", "tree"


def _changed_lines(before: bytes, after: bytes) -> set[int]:
    """The 1-based line numbers of `after` that porter inserted or replaced."""
    old, new = before.decode(errors="replace").splitlines(), after.decode(errors="replace").splitlines()
    changed: set[int] = set()
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            changed.update(range(j1 + 1, j2 + 1))
    return changed


def owner(tree: Path | None, file: str, line: int) -> str | None:
    """PORT or TREE for `file` (relative to the tree) at `line`; None when the tree has no journal."""
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
    if written.created:
        return PORT
    return PORT if line in _changed_lines(written.before, written.after) else TREE


def described(tree: Path | None, file: str, line: int) -> str:
    """'the tree's own code at F:N (porter did not change it)', 'the port's code at F:N', or ''."""
    who = owner(tree, file, line)
    if who == TREE:
        return f"the tree's own code at {file}:{line} (porter did not write that line)"
    if who == PORT:
        return f"the port's code at {file}:{line} (a line porter wrote)"
    return ""
