"""A norm chosen per branch: the layer assigns its norm in every branch of an if/elif/else (one
branch per norm type, e.g. LayerNorm with or without fused-kernel keywords, else RMSNorm), and
whatever is built like that norm must be built in each branch, next to the branch's own call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import libcst as cst

from porter.cst import match as m
from porter.cst.nodes import assigned_names, code, dotted


class NotUnderstood(Exception):
    """A branch shape whose builds porter cannot list (the message says which and why)."""


def branch_builds(stmt: cst.If, target: str) -> list[cst.SimpleStatementLine]:
    """The statements `<target> = <Call>(...)` that build `target` on the paths through the
    if/elif/else `stmt`, one per branch (nested if/elif/else inside a branch followed into; a
    branch that ends in `raise` builds nothing and goes nowhere). Raises NotUnderstood where a
    path goes on without building it exactly once that way: an if without else, a branch
    without the assignment or with two, or the assignment inside a loop, with or try."""
    return [build for block in _branches(stmt, target) for build in _builds(block, target)]


def _branches(stmt: cst.If, target: str):
    """The blocks of an if/elif/else chain; an if without else leaves a path without `target`."""
    keyword = "if"
    while True:
        yield _block(stmt.body)
        if isinstance(stmt.orelse, cst.Else):
            yield _block(stmt.orelse.body)
            return
        if stmt.orelse is None:
            raise NotUnderstood(f"`{keyword} {code(stmt.test)}:` has no else, so one path builds no {target}")
        stmt, keyword = stmt.orelse, "elif"


def _block(suite: cst.BaseSuite) -> Sequence[cst.BaseStatement]:
    if not isinstance(suite, cst.IndentedBlock):
        raise NotUnderstood("a branch written on the if's own line")
    return suite.body


def _builds(block: Sequence[cst.BaseStatement], target: str) -> list[cst.SimpleStatementLine]:
    found = [s for s in block if target in assigned_names(s)]
    if not found and block and m.matches(block[-1], m.SimpleStatementLine(body=[m.Raise()])):
        return []  # e.g. `else: raise ValueError(...)` for a norm type the tree does not know
    if len(found) != 1:
        raise NotUnderstood(f"a branch assigns {target} {len(found)} times" if found
                            else f"a branch does not assign {target}")
    stmt = found[0]
    if isinstance(stmt, cst.If):
        return branch_builds(stmt, target)
    if (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and m.matches(stmt.body[0], m.Assign(value=m.Call()))
            and [dotted(t.target) for t in stmt.body[0].targets] == [target]):
        return [stmt]
    first = code(stmt).splitlines()[0]
    raise NotUnderstood(f"a branch assigns {target} in `{first}`, not as `{target} = <Norm>(...)`")


class AfterEachBuild(cst.CSTTransformer):
    """Put statements right after each given build statement, in the branch that holds it.

    What: `new(build)` -> the statements that follow `build` (found by identity) in its block.
    Why: where a layer builds its norm per branch, a norm built like it must use the branch's
    class and arguments; statements after the if/elif/else could not tell which branch ran.
    """

    def __init__(self, builds: Sequence[cst.SimpleStatementLine],
                 new: Callable[[cst.SimpleStatementLine], list[cst.BaseStatement]]) -> None:
        super().__init__()
        self.builds = {id(b) for b in builds}
        self.new = new

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.IndentedBlock:
        if not any(id(s) in self.builds for s in original.body):
            return updated
        body: list[cst.BaseStatement] = []
        for before, after in zip(original.body, updated.body, strict=True):
            body.append(after)
            if id(before) in self.builds:
                body.extend(self.new(before))
        return updated.with_changes(body=body)
