"""Undo `porter apply`: put every file back as the journal says it was, all or nothing.

Every apply in `.porter/journal.json` is undone, newest first: a file porter changed gets
its bytes from before back, a file porter created is removed, folders porter created are
removed when empty, and `.porter/` goes. The result is the tree byte for byte as before the
first apply.

A file that is no longer as porter left it is refused, by name, unless the caller asks to
keep such edits: then the file becomes a three-way merge (porter.merge) of porter's output
(the base), the file now (the user's edits) and the file before the apply (the undoing of
porter's edits). Edits that overlap porter's lines, and edits to files porter created,
are refused. A file already back as it was before the apply is left as it is.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from porter import journal
from porter.checks import check_compiles
from porter.errors import PorterError
from porter.merge import MergeConflict, merge3
from porter.writable import marked_writable
from porter.writer import FileWrite, Transaction, remove_empty_dirs, tree_lock


@dataclass
class RevertResult:
    restored: list[str] = field(default_factory=list)  # changed files, back as they were
    removed: list[str] = field(default_factory=list)  # created files, removed
    merged: list[str] = field(default_factory=list)  # restored, keeping the user's later edits


def _read(root: Path, rel: str) -> bytes | None:
    path = root / rel
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise PorterError(f"cannot read {rel}: {exc.strerror}", file=rel, fix=f"make {rel} readable") from exc


def _merge(rel: str, base: bytes, ours: bytes, theirs: bytes) -> bytes:
    """porter's output (base) + the user's edits (ours) + porter's input (theirs)."""
    try:
        texts = [data.decode("utf-8") for data in (base, ours, theirs)]
    except UnicodeDecodeError as exc:
        raise PorterError(
            f"{rel} is no longer UTF-8 text: porter cannot merge your edits",
            file=rel, construct="a UTF-8 text file", found=str(exc),
            fix=f"undo your edits of {rel}, or convert it back to UTF-8, then revert again",
        ) from exc
    lines = [text.splitlines(keepends=True) for text in texts]
    try:
        merged = "".join(merge3(*lines))
    except MergeConflict as conflict:
        raise PorterError(
            f"your edits of {rel} overlap porter's: revert cannot keep them",
            file=rel,
            construct="edits apart from the lines porter added or changed",
            found=f"overlapping edits at {conflict.describe()} of the ported file",
            fix=f"move your edits of {rel} away from porter's lines (see `porter diff`), or undo them, "
            "then revert again; nothing was written",
        ) from None
    if _compiles(texts[1], rel):
        check_compiles(rel, merged)
    return merged.encode("utf-8")


def _compiles(text: str, rel: str) -> bool:
    try:
        compile(text, rel, "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def plan_revert(root: Path, keep_edits: bool) -> tuple[list[FileWrite], RevertResult, list[str]]:
    """The writes that undo every apply, what they do, and the folders to remove after."""
    applies = journal.read_journal(root)
    if applies is None:
        raise PorterError(
            f"nothing to revert: {root} has no porter journal",
            file=str(root / journal.JOURNAL_PATH),
            construct="the journal `porter apply` writes in the tree",
            found="no .porter/journal.json",
            fix="porter revert undoes `porter apply` on the same tree; check --target "
            "(a tree ported by hand or copied without .porter/ is restored with your version control)",
        )
    now: dict[str, bytes | None] = {}  # the files as they are on disk
    state: dict[str, bytes | None] = {}  # the files as the revert leaves them
    result = RevertResult()
    changed: list[str] = []
    for apply in reversed(applies):
        for item in apply.files:
            if item.path not in now:
                now[item.path] = state[item.path] = _read(root, item.path)
            current = state[item.path]
            if current == item.after or current == item.before:
                state[item.path] = item.before
            elif not keep_edits:
                changed.append(item.path)
            elif item.created or current is None:
                raise PorterError(
                    f"{item.path} was {'deleted' if current is None else 'edited'} since porter "
                    f"{'created' if item.created else 'changed'} it: revert cannot keep that",
                    file=item.path,
                    construct="the file as porter left it, or edits revert can keep",
                    found="a file porter created, edited since" if current is not None else "the file is gone",
                    fix=(f"move it aside, then revert again (revert removes what porter created): "
                         f"`mv {shlex.quote(str(root / item.path))} {shlex.quote(str(root / item.path))}.mine && "
                         f"porter revert --target {shlex.quote(str(root))} --keep-edits`"
                         if current is not None else
                         f"restore {item.path} (e.g. from your version control), then revert again")
                    + "; nothing was written",
                )
            else:
                state[item.path] = _merge(item.path, item.after, current, item.before)
                if item.path not in result.merged:
                    result.merged.append(item.path)
    if changed:
        raise PorterError(
            f"{changed[0]} changed since porter applied the port: revert would lose those edits",
            file=changed[0],
            construct="every file porter wrote, as porter left it",
            found="changed since the apply: " + ", ".join(sorted(set(changed))),
            fix="run `porter revert --keep-edits` to keep your edits where they do not overlap porter's, "
            "or undo them first; nothing was written",
        )
    writes = []
    for rel, after in state.items():
        if after == now[rel]:
            continue
        writes.append(FileWrite(rel, now[rel], after))
        if after is None:
            result.removed.append(rel)
        elif rel not in result.merged:
            result.restored.append(rel)
    journal_path = root / journal.JOURNAL_PATH
    writes.append(FileWrite(journal.JOURNAL_PATH, journal_path.read_bytes(), None))
    folders = sorted({d for apply in applies for d in apply.created_dirs})
    return writes, result, folders


def revert(target: str | Path, keep_edits: bool = False) -> RevertResult:
    root = Path(target)
    if not root.is_dir():
        raise PorterError(
            f"target {root} is not a folder",
            file=str(root),
            construct="the root of a tree porter applied a port to",
            fix="pass --target the folder you gave `porter apply`",
        )
    if not marked_writable(root):  # no lock in a read-only root: first name every path in the way
        Transaction(root, plan_revert(root, keep_edits)[0]).check()
    with tree_lock(root):
        writes, result, folders = plan_revert(root, keep_edits)
        Transaction(root, writes).commit()
        remove_empty_dirs(root, folders)
    return result
