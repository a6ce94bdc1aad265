"""Rewrites for RMSNorm: the norm class chosen by switch at every norm site, the GPT pipe's final norm, and no weight decay on its weights."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    code,
    expression,
    statements,
)
from porter.edits.base import Rewrite, replace_each


class ChooseNormClass(Rewrite):
    """Pick the norm class by argument at every norm site of a class's `__init__`.

    Why: LLaMA normalises with RMSNorm where GPT uses LayerNorm: before attention, before
    the MLP, and after the last layer. A local `norm_class = RMSNorm if ... else LayerNorm`
    is set after `args = get_args()` and every `self.<x> = LayerNorm(...)` calls it instead,
    with the same arguments (both take the hidden size and `eps=`). A site that passes a
    keyword RMSNorm does not take (`accepts`) is refused rather than left to fail when built.
    """

    construct = "`args = get_args()` and `self.<x> = LayerNorm(...)` norm sites"

    func = "__init__"
    cls: str
    test: str
    norm: str = "RMSNorm"
    base: str = "LayerNorm"
    accepts: tuple[str, ...] = ("hidden_size", "eps")

    def rewrite_body(self, body):
        choice = statements(f"norm_class = {self.norm} if {self.test} else {self.base}")[0]
        if self.recognised(body, lambda s: code(s) == code(choice)):
            return body
        sites = m.Assign(value=m.Call(func=m.Name(self.base)))
        if not any(findall(s, sites) for s in body):
            self.missing(f"no `self.<x> = {self.base}(...)` in __init__")
            return body
        calls = [c for s in body for c in findall(s, m.Call(func=m.Name(self.base)))]
        foreign = sorted({a.keyword.value for c in calls for a in c.args
                          if a.keyword is not None and a.keyword.value not in self.accepts})
        if foreign:
            self.missing(f"a {self.base}(...) site passes {', '.join(foreign)}=, which {self.norm} does not take")
            return body
        out = []
        for stmt in body:
            stmt, _ = replace_each(
                stmt,
                lambda s: next(iter(findall(s, m.Call(func=m.Name(self.base)))), None),
                lambda call: call.with_changes(func=cst.Name("norm_class")),
            )
            out.append(stmt)
        args_at = next(
            (i for i, s in enumerate(out) if m.matches(s, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("args"))])]))),
            None,
        )
        if args_at is None:
            out = statements("args = get_args()") + out
            args_at = 0
        # A function that imports the norm classes itself: choose after that import.
        local = [i for i, s in enumerate(out) if {self.base, self.norm} & set(_imported_names(s))]
        at = max([args_at, *local])
        self.anchored()
        return out[: at + 1] + [choice] + out[at + 1 :]


def _imported_names(stmt: cst.CSTNode) -> list[str]:
    """Names a top-level statement of a function body imports (`from x import A as B` -> B)."""
    if not isinstance(stmt, cst.SimpleStatementLine):
        return []
    names = []
    for small in stmt.body:
        if isinstance(small, (cst.Import, cst.ImportFrom)) and not isinstance(small.names, cst.ImportStar):
            names += [code(a.asname.name if a.asname else a.name).split(".")[0] for a in small.names]
    return names


class PipeNormChoice(Rewrite):
    """Choose the norm class of the pipeline model's final-norm `LayerSpec` by argument.

    Why: the pipe model builds its last norm as `LayerSpec(LayerNorm, ...)` outside the
    transformer; with RMSNorm chosen it must follow the same argument as every other site.
    """

    construct = "`LayerSpec(LayerNorm, ...)` in the pipe model's __init__"

    func = "__init__"
    cls: str
    test: str
    norm: str = "RMSNorm"
    base: str = "LayerNorm"

    def rewrite_body(self, body):
        spec = m.Call(func=m.Name("LayerSpec"), args=[m.Arg(value=m.Name(self.base)), m.ZeroOrMore()])
        chosen = m.Call(func=m.Name("LayerSpec"), args=[m.Arg(value=m.IfExp()), m.ZeroOrMore()])
        out = []
        for stmt in body:
            if findall(stmt, chosen):
                self.already_done()
            stmt, count = replace_each(
                stmt,
                lambda s: next(iter(findall(s, spec)), None),
                lambda call: call.with_changes(
                    args=[call.args[0].with_changes(value=expression(f"{self.norm} if {self.test} else {self.base}")), *call.args[1:]]
                ),
            )
            self._hits += count
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing(f"no LayerSpec({self.base}, ...) in __init__")
        return out


class NoWeightDecayFor(Rewrite):
    """Exempt a new norm class from weight decay, as the tree exempts LayerNorm.

    Why: the optimizer puts the parameters of `LayerNorm` modules in the no-weight-decay
    group; RMSNorm weights are norm gains too and must not decay (the hand port had to fix
    this by hand). `isinstance(m, LayerNorm)` becomes `isinstance(m, (LayerNorm, RMSNorm))`.
    """

    construct = "`isinstance(module_, LayerNorm)` in the weight-decay grouping"

    func: str
    norm: str = "RMSNorm"
    base: str = "LayerNorm"

    def rewrite_body(self, body):
        plain = m.Call(func=m.Name("isinstance"), args=[m.Arg(), m.Arg(value=m.Name(self.base))])
        done = m.Call(func=m.Name("isinstance"), args=[m.Arg(), m.Arg(value=m.Tuple())])
        out = []
        for stmt in body:
            for call in findall(stmt, done):
                if self.norm in code(call.args[1].value):
                    self.already_done()
            stmt, count = replace_each(
                stmt,
                lambda s: next(iter(findall(s, plain)), None),
                lambda call: call.with_changes(
                    args=[call.args[0], call.args[1].with_changes(value=expression(f"({self.base}, {self.norm})"))]
                ),
            )
            self._hits += count
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing(f"no isinstance(..., {self.base}) in the function")
        return out


class _ReadsRenamed(cst.CSTTransformer):
    """Every plain read of `old` becomes `new` (attributes, keywords and parameters of that name stay)."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__()
        self.old, self.new = old, new

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return updated.with_changes(value=self.new) if original.value == self.old else updated

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(attr=original.attr)

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)

    def leave_Param(self, original: cst.Param, updated: cst.Param) -> cst.Param:
        return updated.with_changes(name=original.name)


class ChooseOffsetNorm(Rewrite):
    """Build porter's offset RMSNorm where the tree builds its own RMSNorm, when the offset is on.

    Why: Gemma's RMSNorm scales by (1 + w) (its stored w is zero for a unit scale); a tree's own
    RMSNorm scales by w alone. A local `rmsnorm_class = OffsetRMSNorm if <offset on> else
    <tree's class>` is set right before the function first reads the tree's class, and every
    read after it (`RMSNorm(...)` in each branch, `LayerSpec(RMSNorm, ...)`) names the local
    instead: with the offset off the tree's class is built, with the same arguments, as before.
    """

    construct = "reads of the tree's RMSNorm class (`RMSNorm(...)`, `LayerSpec(RMSNorm, ...)`)"

    cls: str | None
    func: str
    tree: str  # the tree's RMSNorm class the function reads
    test: str  # true when the offset is on
    offset: str = "OffsetRMSNorm"
    local: str = "rmsnorm_class"

    def rewrite_body(self, body):
        from porter.differences.rmsnorm.offset_sites import reads

        choice = statements(f"{self.local} = {self.offset} if {self.test} else {self.tree}")[0]
        if self.recognised(body, lambda s: code(s) == code(choice)):
            return body
        first = next((i for i, s in enumerate(body) if reads(s, self.tree)), None)
        if first is None:
            self.missing(f"{self.where()} does not read {self.tree}")
            return body
        rename = _ReadsRenamed(self.tree, self.local)
        self.anchored()
        return [*body[:first], choice, *(s.visit(rename) for s in body[first:])]
