"""Rewrites of the tree's transformer layer for shared experts: built beside the MoE layer, added to its output."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, dotted, statements, with_comment
from porter.differences.moe.rewrites import one_line
from porter.edits.base import Rewrite

ATTR = "shared_experts"


def _moe_if(stmt) -> cst.If | None:
    """The MoE difference's `if <experts> > 1: self.<mlp> = MoE(...) ... else: self.<mlp> = ParallelMLP(...)`."""
    if isinstance(stmt, cst.If) and stmt.orelse is not None and findall(stmt.body, m.Call(func=m.Name("MoE"))):
        return stmt
    return None


class SharedExpertsInit(Rewrite):
    """After the layer's MoE layer, `self.shared_experts`: the tree's MLP at the shared experts' width.

    Why: DeepSeek's layers with experts run every token through shared experts too (one dense
    MLP as wide as all of them together, HF's n_shared_experts x moe_intermediate_size) and add
    its output to the routed experts'. It is the tree's own ParallelMLP, built as the dense
    MLP is (`built_at_width`: the tree's MLP reads its width from the args), so it is split over
    tensor-parallel ranks as the dense MLP is. None in dense layers, and where the switch is off.
    """

    construct = "the MoE difference's `if <experts> > 1: ... MoE(...) ... else: self.<mlp> = ParallelMLP(...)`"

    func = "__init__"
    cls: str
    experts: str
    width: str

    def rewrite_body(self, body):
        if self.recognised(body, f"self.{ATTR}"):
            return body
        index = next((i for i, s in enumerate(body) if _moe_if(s)), None)
        if index is None:
            self.missing("no `if ...: self.<mlp> = MoE(...) else: ...` (the MoE difference's layer)")
            return body
        dense = next((a.value for a in findall(body[index].orelse, m.Assign(value=m.Call()))
                      if (dotted(a.value.func) or "").endswith("ParallelMLP")), None)
        if dense is None:
            self.missing("no `self.<mlp> = ParallelMLP(...)` in the MoE layer's else branch")
            return body
        self.anchored()
        new = statements(
            f"self.{ATTR} = None\n"
            f"if {self.experts} > 1 and {self.width}:\n"
            f"    self.{ATTR} = built_at_width(args, {self.width}, lambda: {one_line(dense)})\n"
        )
        new[0] = with_comment(new[0], "Shared experts (DeepSeek): a dense MLP every token of a layer with experts "
                                      "goes through,")
        new[0] = with_comment(new[0], "its output added to the routed experts'.")
        return [*body[:index + 1], *new, *body[index + 1:]]


class SharedExpertsForward(Rewrite):
    """Add the shared experts' output to the MoE layer's, where the layer runs its MoE layer.

    Why: HF's DeepSeek MoE block returns routed + shared; DeepSpeed's MoE layer gives the routed
    part. The shared experts see the MoE layer's input (the post-attention norm's output).
    """

    construct = "the MoE difference's `<out>, moe_loss, _ = self.<mlp>(<input>)` in ParallelTransformerLayer.forward"

    func = "forward"
    cls: str

    @staticmethod
    def _runs_moe(stmt):
        for assign in findall(stmt, m.Assign(value=m.Call())):
            target = assign.targets[0].target
            if isinstance(target, cst.Tuple) and len(target.elements) == 3 and dotted(assign.value.func) == "self.mlp":
                return assign
        return None

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: bool(findall(s, m.Attribute(attr=m.Name(ATTR))))):
            return body
        out = []
        for stmt in body:
            if isinstance(stmt, cst.If) and isinstance(stmt.orelse, cst.Else) and not self._hits:
                block = stmt.orelse.body
                at = next((i for i, s in enumerate(block.body) if self._runs_moe(s)), None)
                if at is not None:
                    assign = self._runs_moe(block.body[at])
                    output = code(assign.targets[0].target.elements[0].value)
                    argument = code(assign.value.args[0].value)
                    added = statements(
                        f"if self.{ATTR} is not None:\n"
                        f"    shared_output, _ = self.{ATTR}({argument})\n"
                        f"    {output} = {output} + shared_output\n")[0]
                    added = with_comment(added, "shared experts (DeepSeek): every token, beside the routed experts")
                    body_ = [*block.body[:at + 1], added, *block.body[at + 1:]]
                    stmt = stmt.with_changes(orelse=stmt.orelse.with_changes(body=block.with_changes(body=body_)))
                    self.anchored()
            out.append(stmt)
        if not self._hits:
            self.missing("no `<out>, moe_loss, _ = self.mlp(...)` in an else branch")
        return out
