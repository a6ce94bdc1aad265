"""The port as one pipeline: spec + tree -> profile -> plan -> changes (in memory) -> write.

`porter diff` shows the changes; `porter apply` checks them and writes them. Both call
`prepare()`, so a diff is exactly what apply would write. Before anything is written the
whole port is checked in memory: every file compiles and changed only where its edits are
anchored (porter.workspace, porter.checks); the port already in the tree is as porter's
journal says porter left it, or repaired where that is safe (porter.port_state); and planning the port again over its own result, in memory, changes
nothing (`check_stable`), which is what makes a second apply a no-op; and every name the
new code imports from the tree is there (porter.checks.check_imports).
"""

from __future__ import annotations

import gc
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from porter import journal, port_state
from porter.catalog import load_spec, profile_of
from porter.checks import check_imports
from porter.errors import PorterError
from porter.naming import spec_in_tree
from porter.patch import file_patch
from porter.plan import Plan, make_plan
from porter.profile import TreeProfile
from porter.source import SourceTree
from porter.spec import Spec
from porter.workspace import FileChange, Workspace
from porter.writable import marked_writable
from porter.writer import FileWrite, Transaction, tree_lock


@dataclass
class Port:
    spec: Spec
    tree: SourceTree
    profile: TreeProfile
    plan: Plan
    changes: list[FileChange]
    state: port_state.PortState | None = None  # the port already in the tree (porter's journal)

    @property
    def repaired(self) -> set[str]:
        """Files porter generated, deleted since, that this port re-creates."""
        return set() if self.state is None else {f.path for f in self.state.repairs}

    @property
    def root(self) -> Path:
        return self.tree.root


def _render(spec: Spec, tree: SourceTree) -> tuple[TreeProfile, Plan, list[FileChange]]:
    profile = profile_of(tree)
    plan = make_plan(spec, profile)
    return profile, plan, Workspace(tree).render(plan)


def check_stable(spec: Spec, ported: SourceTree) -> None:
    """Plan and render the port again over its own result (`ported`, in memory): it must
    change nothing."""
    try:
        _, _, again = _render(spec, ported)
    except PorterError as exc:
        raise PorterError(
            "internal error: porter cannot re-apply its own port (checked in memory)",
            file=exc.file,
            construct="a port that porter recognises as done, so that a second apply is a no-op",
            found=exc.message + (f" ({exc.found})" if exc.found else ""),
            fix="nothing was written; please report this with `porter diff --debug` output",
        ) from exc
    if again:
        first = again[0]
        raise PorterError(
            "internal error: applying the port a second time would change it again (checked in memory)",
            file=first.path,
            construct="a port that porter recognises as done, so that a second apply is a no-op",
            found="the second pass changes " + ", ".join(c.path for c in again) + ":\n" + file_patch(first)[:2000],
            fix="nothing was written; please report this with `porter diff --debug` output",
        )


@contextmanager
def no_cyclic_gc(freeze: bool = False) -> Iterator[None]:
    """Python's cycle collector paused while porter builds syntax trees.

    A port makes a few hundred thousand libcst nodes, kept until the port is done and none
    in a reference cycle, so every collection their allocation triggers walks them all for
    nothing (about a third of `porter diff` on a large tree). Reference counting still frees
    what is dropped. The collector is back on, as it was, when the block ends; with
    `freeze` (porter's CLI, whose process ends after the port) what was built is first moved
    out of its sight (gc.freeze), so that neither the next collection nor the last one at
    exit walks it again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def prepare(model: str | Spec, target: str | Path) -> Port:
    with no_cyclic_gc():
        return _prepare(model, target)


def _prepare(model: str | Spec, target: str | Path) -> Port:
    spec = model if isinstance(model, Spec) else load_spec(model)
    named = shlex.quote(model) if isinstance(model, str) else spec.name  # as the user names it
    tree = SourceTree.open(target)
    state = port_state.read_state(tree.root)
    damaged = port_state.damage_refusal(state, named)
    if damaged is not None:
        raise damaged
    tree = port_state.repaired(tree, state)  # porter's deleted files back, in memory
    spec = spec_in_tree(spec, tree)  # free names where the tree holds its own pretrain_<name>.py ...
    try:
        profile, plan, rendered = _render(spec, tree)
    except PorterError as exc:
        # A port changed by hand can fail to plan; say that rather than what failed.
        edited = port_state.edited_refusal(state, named)
        if edited is not None:
            raise edited from exc
        raise
    if rendered:
        refusal = (port_state.edited_refusal(state, named) if state.journaled
                   else port_state.no_journal_refusal(tree.root, profile.generated))
        if refusal is not None:
            raise refusal
    changes = _with_repairs(rendered, state)
    if changes:
        ported = tree.with_changes({change.path: change.after for change in changes})
        check_imports(ported, changes)
        check_stable(spec, ported)
    return Port(spec=spec, tree=tree, profile=profile, plan=plan, changes=changes, state=state)


def _with_repairs(rendered: list[FileChange], state: port_state.PortState) -> list[FileChange]:
    """The rendered changes, and porter's deleted files re-created (as new files: on disk they
    are absent; a repaired file the port also changes is created with its new content)."""
    by_path = {change.path: change for change in rendered}
    repairs = []
    for item in state.repairs:
        change = by_path.pop(item.path, None)
        if change is None:
            repairs.append(FileChange(path=item.path, before=None, text=port_state.repaired_text(item),
                                      after=item.written.after, provenance=list(item.written.record.get("provenance", [])),
                                      edits=[]))
        else:
            repairs.append(FileChange(path=item.path, before=None, text=change.text, after=change.after,
                                      provenance=change.provenance, edits=change.edits))
    return repairs + [change for change in rendered if change.path in by_path]


def _created_dirs(root: Path, changes: list[FileChange]) -> list[str]:
    dirs: set[str] = set()
    for change in changes:
        folder = Path(change.path).parent
        while folder != Path(".") and not (root / folder).exists():
            dirs.add(folder.as_posix())
            folder = folder.parent
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def apply(model: str | Spec, target: str | Path) -> Port:
    """Port `model` into the tree: check everything in memory, then write all or nothing.

    Holds the tree's lock from reading to writing. The journal entry goes into the same
    transaction as the files. Returns the Port; `changes` is empty when the tree already has the port.
    """
    spec = model if isinstance(model, Spec) else load_spec(model)
    root = SourceTree.open(target).root
    if not marked_writable(root):  # no lock in a read-only root: first name every path in the way
        port = prepare(spec, root)
        if not port.changes:
            return port
        Transaction(root, _writes(root, port)).check()
    with tree_lock(root):
        port = prepare(spec, root)
        if not port.changes:
            return port
        Transaction(root, _writes(root, port)).commit()
    return port


def _writes(root: Path, port: Port) -> list[FileWrite]:
    """The port's files and its journal entry, the journal first (so that an interrupted
    write is still revertible)."""
    entry = journal.entry(port.spec.name, port.spec.path, port.changes, _created_dirs(root, port.changes))
    restored = {f.path: f.written for f in port.state.repairs} if port.state is not None else {}
    for record in entry["files"]:
        written = restored.get(record["path"])
        if written is not None and written.record.get("after_sha256") == record["after_sha256"]:
            record.update(repaired=True, edits=written.record.get("edits", []))
    journal_now, journal_after = journal.appended(root, entry)
    writes = [FileWrite(journal.JOURNAL_PATH, journal_now, journal_after)]
    return writes + [FileWrite(c.path, None if c.before is None else c.before.raw, c.after) for c in port.changes]
