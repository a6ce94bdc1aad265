"""Repair of a tree's own grouped-query attention, where its one key/value head reaches the core
attention as an expanded view: the core attention reshapes its keys and values instead of
viewing them."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import dotted, with_comment
from porter.edits.base import Rewrite

HEADS = ("key_layer", "value_layer")


def _views(stmt: cst.BaseStatement) -> list[cst.Call]:
    """`<x>.view(...)` calls of a statement `<x> = <x>.view(...)`, x the keys or the values."""
    if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1 or not isinstance(stmt.body[0], cst.Assign):
        return []
    assign = stmt.body[0]
    target = dotted(assign.targets[0].target) if len(assign.targets) == 1 else None
    call = assign.value
    if target not in HEADS or not m.matches(call, m.Call(func=m.Attribute(attr=m.Name("view")))):
        return []
    return [call] if dotted(call.func.value) == target else []


class ReshapedKeysAndValues(Rewrite):
    """`key_layer = key_layer.view(...)` (values alike) in the core attention becomes `.reshape(...)`.

    Why: a tree's own grouped-query attention repeats its key/value heads before the core
    attention, and for a single head (multi-query attention: Gemma-3 1B, Gemma 2B) some trees
    repeat by `expand` alone, a view with stride 0 over the heads; the core attention then
    `view`s keys and values to [sk, b * np, hn], which torch refuses for such a tensor. `reshape`
    is that same view wherever one exists (no copy, the tree's usual case) and a copy otherwise.
    """

    construct = "`key_layer = key_layer.view(...)` / `value_layer = value_layer.view(...)` in the core attention"

    cls: str
    func: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: any(
                m.matches(c, m.Call(func=m.Attribute(value=m.Name(h), attr=m.Name("reshape"))))
                for h in HEADS for c in findall(s, m.Call()))):
            return body
        at = [i for i, s in enumerate(body) if _views(s)]
        if not at:
            self.missing("no `key_layer = key_layer.view(...)` nor `value_layer = value_layer.view(...)`")
            return body
        self.anchored()
        out = list(body)
        for i in at:
            call = _views(out[i])[0]
            new = out[i].deep_replace(call.func.attr, cst.Name("reshape"))
            out[i] = with_comment(new, "reshape: a single key/value head may come repeated by expand (no view of it exists)")
        return out
