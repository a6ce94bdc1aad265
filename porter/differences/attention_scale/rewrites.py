"""Rewrite of the tree's attention: the score scale from --query-pre-attn-scalar (Gemma-2/3)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.nodes import expression, mentions, with_comment
from porter.edits.base import Rewrite

NORM = "norm_factor"


class QueryPreAttnScalar(Rewrite):
    """`self.norm_factor = math.sqrt(<head size>)` takes the switch's number when it is set.

    Why: Megatron scales the scores by alpha = 1 / norm_factor (times the layer number it divides
    out again with apply_query_key_layer_scaling); Gemma-2/3 scale by query_pre_attn_scalar ** -0.5,
    which is not always the head size (gemma-2-27b: 144 for heads of 128). Changing the one
    number the tree derives its alpha from keeps the layer scaling and reaches the tree's
    unfused scores and porter's fused kernel (which reads the tree's alpha) alike.
    """

    construct = "`self.norm_factor = math.sqrt(...)` in the core attention's __init__"

    func = "__init__"
    cls: str
    value: str  # the switch's value, e.g. args.query_pre_attn_scalar

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: _sets_norm(s) and mentions(s, self.value)):
            return body
        sqrt = m.Call(func=m.Attribute(value=m.Name("math"), attr=m.Name("sqrt")), args=[m.Arg()])
        at = next((i for i, s in enumerate(body) if _sets_norm(s) and m.matches(s.body[0].value, sqrt)), None)
        if at is None:
            self.missing(f"no `self.{NORM} = math.sqrt(...)` in __init__")
            return body
        self.anchored()
        stmt = body[at]
        call = stmt.body[0].value
        head = call.args[0].value
        new_call = call.with_changes(args=[call.args[0].with_changes(
            value=expression(f"{self.value} or X").with_changes(right=head))])
        new = stmt.with_changes(body=[stmt.body[0].with_changes(value=new_call)])
        new = with_comment(new, "the scores are scaled by 1/sqrt(--query-pre-attn-scalar) when it is set (Gemma-2/3)")
        return [*body[:at], new, *body[at + 1:]]


def _sets_norm(stmt: cst.BaseStatement) -> bool:
    return m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(
        target=m.Attribute(value=m.Name("self"), attr=m.Name(NORM)))])]))
