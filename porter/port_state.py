"""Is the port in a tree as porter left it? Every file porter's journal lists, checked on disk.

Each file porter wrote is intact (the bytes porter wrote last), missing, or edited since.
What that means for `porter apply`, `diff` and `inspect`:

- a file porter generated, deleted since: apply re-creates it from the bytes the journal
  keeps (those porter wrote), journaled as a new apply; `diff` shows it as a new file;
- a file porter generated, edited since: refused. porter cannot tell a fix from damage and
  does not overwrite either; the way out is to move it aside (porter re-creates its own
  version, and the edits can be carried over from the copy);
- a file of the tree porter changed, deleted since: refused; porter re-creates only its own
  files, the tree's come back from version control;
- a file of the tree porter changed, edited since: the tree's life goes on. Nothing to say
  while the port has nothing to change; when it does (a new porter, a changed spec) porter
  will not port over edits it cannot place, and says how to undo the port keeping them
  (`porter revert --keep-edits`) and apply again.

A tree with porter's generated files but no journal is refused too (partly ported, or
ported and its journal deleted).
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass
from pathlib import Path

from porter import journal
from porter.errors import PorterError
from porter.source import SourceTree, decode

INTACT, MISSING, EDITED = "intact", "missing", "edited"


@dataclass(frozen=True)
class PortedFile:
    """One file porter wrote: porter's last write of it, and the file now."""

    written: journal.JournalFile
    now: bytes | None

    @property
    def path(self) -> str:
        return self.written.path

    @property
    def created(self) -> bool:
        return self.written.created

    @property
    def state(self) -> str:
        if self.now == self.written.after:
            return INTACT
        return MISSING if self.now is None else EDITED

    def describe(self) -> str:
        """`deleted since porter created it`, `edited since porter changed it (+2 -1 lines)`."""
        verb = "created" if self.created else "changed"
        if self.state == MISSING:
            return f"deleted since porter {verb} it"
        old, new = _lines(self.written.after), _lines(self.now)
        added = removed = 0
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
            if op != "equal":
                removed, added = removed + i2 - i1, added + j2 - j1
        return f"edited since porter {verb} it (+{added} -{removed} lines)"


def _lines(data: bytes | None) -> list[bytes]:
    return [] if data is None else data.splitlines(keepends=True)


@dataclass(frozen=True)
class PortState:
    root: Path  # as the user gave it
    journaled: bool
    files: tuple[PortedFile, ...]

    def _where(self, created: bool, state: str) -> list[PortedFile]:
        return [f for f in self.files if f.created == created and f.state == state]

    @property
    def repairs(self) -> list[PortedFile]:
        """Generated files deleted since: apply re-creates them."""
        return self._where(True, MISSING)

    @property
    def damaged(self) -> list[PortedFile]:
        """Generated files edited since, and the tree's files deleted since: refused."""
        return self._where(True, EDITED) + self._where(False, MISSING)

    @property
    def edited(self) -> list[PortedFile]:
        """The tree's files porter changed, edited since (the user's own work)."""
        return self._where(False, EDITED)

    def notes(self) -> list[dict]:
        """Every file porter wrote that is not as porter left it, and what porter does about it."""
        repairs, damaged = set(map(id, self.repairs)), set(map(id, self.damaged))
        out = []
        for f in self.files:
            if f.state == INTACT:
                continue
            action = ("apply re-creates it" if id(f) in repairs else
                      "porter refuses the port until it is dealt with" if id(f) in damaged else
                      "your edits, kept; porter refuses only when the port would change something")
            out.append({"path": f.path, "created": f.created, "state": f.state, "what": f.describe(),
                        "action": action})
        return out


def _read(root: Path, rel: str) -> bytes | None:
    path = root / rel
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def read_state(root: Path) -> PortState:
    """Every file the journal says porter wrote (its last write), as it is now."""
    applies = journal.read_journal(root)
    if applies is None:
        return PortState(Path(root), False, ())
    last: dict[str, journal.JournalFile] = {}
    for apply in applies:
        for item in apply.files:
            last[item.path] = item
    return PortState(Path(root), True, tuple(PortedFile(item, _read(root, rel)) for rel, item in last.items()))


def repaired(tree: SourceTree, state: PortState) -> SourceTree:
    """The tree with porter's missing generated files back (in memory)."""
    if not state.repairs:
        return tree
    return tree.with_changes({f.path: f.written.after for f in state.repairs})


def repaired_text(item: PortedFile) -> str:
    return decode(item.path, item.written.after).text


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def _git_root(root: Path) -> Path | None:
    for folder in [root.resolve(), *root.resolve().parents]:
        if (folder / ".git").exists():
            return folder
    return None


def damage_refusal(state: PortState, model: str) -> PorterError | None:
    """The refusal for a damaged port (see the module docstring), or None."""
    damaged = state.damaged
    if not damaged:
        return None
    root = state.root
    steps = []
    edited = [f for f in damaged if f.created]
    if edited:
        steps.append("move porter's edited files aside: `" + " && ".join(
            f"mv {_q(root / f.path)} {_q(root / f.path)}.mine" for f in edited) + "`")
    deleted = [f for f in damaged if not f.created]
    if deleted:
        paths = " ".join(shlex.quote(f.path) for f in deleted)
        steps.append(f"restore the tree's deleted files: `git -C {_q(root)} checkout -- {paths}`"
                     if _git_root(root) else f"restore {paths} from your backup (porter re-creates only its own files)")
    first = damaged[0]
    return PorterError(
        f"the port in {root} is damaged: {first.path} was {first.describe()}"
        + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""),
        file=", ".join(f.path for f in damaged),
        construct=f"every file porter wrote, as porter left it ({journal.JOURNAL_PATH})",
        found="; ".join(f"{f.path}: {f.describe()}" for f in damaged),
        fix="; ".join(steps) + f"; then `porter apply {model} --target {_q(root)}` re-creates porter's files"
        + (" (carry your edits over from the .mine copies)" if edited else "") + "; nothing was written",
    )


def edited_refusal(state: PortState, model: str) -> PorterError | None:
    """When the port would change something: refuse over the tree's files edited since, or None."""
    edited = state.edited
    if not edited:
        return None
    first = edited[0]
    root = _q(state.root)
    return PorterError(
        f"{first.path} was {first.describe()}: porter will not port over a port it cannot trust",
        file=", ".join(f.path for f in edited),
        construct=f"every file porter wrote, as porter left it ({journal.JOURNAL_PATH})",
        found="; ".join(f"{f.path}: {f.describe()}" for f in edited),
        fix=f"undo the port keeping your edits where they do not overlap porter's, then port again: "
        f"`porter revert --target {root} --keep-edits && porter apply {model} --target {root}`; nothing was written",
    )


def no_journal_refusal(root: Path, generated: dict[str, str]) -> PorterError | None:
    """porter's generated files in a tree without porter's journal: refused, or None."""
    if not generated:
        return None
    names = ", ".join(sorted(generated))
    return PorterError(
        "this tree holds files porter generated, but no journal of the apply that made them",
        file=sorted(generated)[0],
        construct=f"a pristine tree, or one with porter's journal ({journal.JOURNAL_PATH})",
        found=f"porter's files: {names}; no {journal.JOURNAL_PATH}",
        fix="the tree is partly ported, or was ported and its .porter/ folder deleted: restore the "
        "pristine tree (e.g. git checkout . && git clean -fd) and run porter apply again",
    )
