"""The port as one pipeline: spec + tree -> profile -> plan -> changes (in memory) -> write.

`porter diff` shows the changes; `porter apply` checks them and writes them. Both call
`prepare()`, so a diff is exactly what apply would write. Before anything is written the
whole port is checked in memory: every file compiles and changed only where its edits are
anchored (porter.workspace, porter.checks); the tree is as porter's journal says porter left
it (porter.journal); and planning the port again over its own result, in memory, changes
nothing (`check_stable`), which is what makes a second apply a no-op; and every name the
new code imports from the tree is there (porter.checks.check_imports).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from porter import journal
from porter.checks import check_imports
from porter.errors import PorterError
from porter.patch import file_patch
from porter.plan import Plan, make_plan
from porter.profile import TreeProfile, build_profile
from porter.source import SourceTree
from porter.spec import Spec, load_spec
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

    @property
    def root(self) -> Path:
        return self.tree.root


def _render(spec: Spec, tree: SourceTree) -> tuple[TreeProfile, Plan, list[FileChange]]:
    profile = build_profile(tree)
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
    tree = SourceTree.open(target)
    try:
        profile, plan, changes = _render(spec, tree)
    except PorterError as exc:
        # A port changed by hand can fail to plan; say that rather than what failed.
        state = journal.state_problem(tree.root, {})
        if state is not None:
            raise state from exc
        raise
    state = journal.state_problem(tree.root, profile.generated) if changes else None
    if state is not None:
        raise state
    if changes:
        ported = tree.with_changes({change.path: change.after for change in changes})
        check_imports(ported, changes)
        check_stable(spec, ported)
    return Port(spec=spec, tree=tree, profile=profile, plan=plan, changes=changes)


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
    journal_now, journal_after = journal.appended(root, entry)
    writes = [FileWrite(journal.JOURNAL_PATH, journal_now, journal_after)]
    return writes + [FileWrite(c.path, None if c.before is None else c.before.raw, c.after) for c in port.changes]
