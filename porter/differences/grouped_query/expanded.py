"""A tree's own grouped-query attention whose key/value repeat is a view with a zero stride.

Trees that implement GQA themselves (microsoft since d6c9d841 and its forks) repeat each
key/value head for its query heads with `x.expand(...)` (one key/value head on the rank) or
`x[:, :, :, None, :].expand(...).reshape(...)`: no copy, a stride of zero. Their unfused
CoreAttention.forward then calls `key_layer.view(sk, b * np, -1)` and
`value_layer.view(...)`, which a zero-stride tensor cannot take (torch: "view size is not
compatible with input tensor's size and stride") as soon as the batch has more than one
sequence. It shows wherever that unfused path runs with one key/value head per rank: MQA
(Gemma), a tensor-parallel size equal to the key/value heads, attention soft-capping (Gemma-2,
which porter's fused attention does not take). `expanded_repeat()` finds the repeat; porter
repairs the views (rewrites.ReshapeRepeatedKeyValue).
"""

from __future__ import annotations

import libcst as cst

from dataclasses import dataclass

from porter.cst import match as m
from porter.cst.find import class_named, findall, function_named
from porter.cst.nodes import assigned_names, code

COPIES = (".contiguous(", ".clone(", "repeat_interleave(", ".repeat(")


@dataclass(frozen=True)
class ExpandedRepeat:
    method: str  # ParallelAttention's repeat (`repeat_kv`)
    viewed: tuple[str, ...]  # CoreAttention.forward's key/value parameters it views (`key_layer = key_layer.view(...)`)


def _repeat_method(attention: cst.ClassDef) -> str | None:
    """The ParallelAttention method that repeats heads by `.expand(...)` and returns the result
    without a copy."""
    for stmt in attention.body.body:
        if not isinstance(stmt, cst.FunctionDef) or stmt.name.value in ("__init__", "forward"):
            continue
        expands = findall(stmt, m.Call(func=m.Attribute(attr=m.Name("expand"))))
        if expands and findall(stmt, m.Return()) and not any(c in code(stmt) for c in COPIES):
            return stmt.name.value
    return None


def _viewed(forward: cst.FunctionDef) -> tuple[str, ...]:
    """forward's key and value parameters (the 3rd and 4th, after self and the query) that it
    reassigns as views of themselves: `key_layer = key_layer.view(...)`."""
    params = [p.name.value for p in forward.params.params][2:4]
    found = []
    for name in params:
        views = m.Assign(targets=[m.AssignTarget(target=m.Name(name))],
                         value=m.Call(func=m.Attribute(value=m.Name(name), attr=m.Name("view"))))
        if findall(forward, views):
            found.append(name)
    return tuple(found)


def expanded_repeat(transformer: cst.Module) -> ExpandedRepeat | None:
    """The tree's zero-stride key/value repeat and the unfused attention's views it breaks, or None."""
    attention, core = class_named(transformer, "ParallelAttention"), class_named(transformer, "CoreAttention")
    forward = function_named(core, "forward") if core is not None else None
    method = _repeat_method(attention) if attention is not None else None
    viewed = _viewed(forward) if forward is not None else ()
    return ExpandedRepeat(method, viewed) if method and viewed else None


def keys_repeated(transformer: cst.Module) -> bool:
    """ParallelAttention.forward repeats the keys per query head (`key_layer = self.<m>(key_layer,
    ...)`) in the statement that first binds both the query and the key: whatever porter puts on
    the keys right after that statement (a key norm) sees np key heads, each group's np/ng alike."""
    attention = class_named(transformer, "ParallelAttention")
    forward = function_named(attention, "forward") if attention is not None else None
    if forward is None:
        return False
    for stmt in forward.body.body:
        names = assigned_names(stmt)
        if "query_layer" not in names or "key_layer" not in names:
            continue
        for assign in findall(stmt, m.Assign(targets=[m.AssignTarget(target=m.Name("key_layer"))],
                                             value=m.Call(func=m.Attribute(value=m.Name("self"))))):
            args = assign.value.args
            if args and code(args[0].value) == "key_layer":
                return True
        return False
    return False
