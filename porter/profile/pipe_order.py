"""Where each weight sits in the generated <Prefix>ModelPipe: read from the layer specs its
`__init__` appends (its own, or its base's when it only checks switches: the flags port
subclasses the tree's GPTModelPipe).

A DeepSpeed PipelineModule names each layer by its index in the spec list, and so do the
checkpoint's layer_XX files. porter's template lays them out as embedding, transpose, the
layers, transpose, final norm, head; a tree's GPTModelPipe may not (microsoft HEAD: a
float16 cast first, no transposes, an LMHeadPipe with its own `lm_head`). The reader walks
the appends in order: a `for` loop (or an `extend` of a comprehension) appends the layers;
an `if`/`else` whose branches append as many specs counts once; an `if` without `else`
appends only in a model the LLaMA family's port does not build (MoE losses, half-precision
casts after the head) and counts none.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall
from porter.cst.nodes import code, dotted


@dataclass(frozen=True)
class PipeOrder:
    embedding: int  # index of the embedding spec
    first_layer: int  # index of the first transformer layer
    norm_after: int | None  # final norm: first_layer + num_layers + norm_after
    head_after: int | None  # the untied head: first_layer + num_layers + head_after
    head_class: str | None  # the head spec's class (LayerSpec(<class>, ...))


def _is_specs_call(node, method: str) -> bool:
    return (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == method
            and dotted(node.func.value) in ("self.specs", "specs"))


def _appends(stmt) -> list[cst.Call]:
    """The `specs.append(...)` calls of a simple statement."""
    if not isinstance(stmt, cst.SimpleStatementLine):
        return []
    out = []
    for small in stmt.body:
        if isinstance(small, cst.Expr) and _is_specs_call(small.value, "append"):
            out.append(small.value)
    return out


def _count(body) -> int | None:
    """How many specs a block appends (None: a loop, or branches that differ)."""
    n = 0
    for stmt in body:
        if isinstance(stmt, (cst.For, cst.While)) and any(_is_specs_call(c, "append") for c in findall(stmt, m.Call())):
            return None
        if isinstance(stmt, cst.If):
            inner = _if_count(stmt)
            if inner is None:
                return None
            n += inner
            continue
        n += len(_appends(stmt))
    return n


def _if_count(stmt: cst.If) -> int | None:
    body = _count(stmt.body.body)
    if stmt.orelse is None:
        return 0  # appends only for a model outside the family (see the module's docstring)
    other = _count(stmt.orelse.body.body if isinstance(stmt.orelse, cst.Else) else [stmt.orelse])
    return body if body == other else None


def _kind(call: cst.Call) -> tuple[str, str | None]:
    """('embedding' | 'norm' | 'head' | 'other', class) of one appended spec."""
    if not call.args:
        return "other", None
    spec = call.args[0].value
    if not isinstance(spec, cst.Call) or (dotted(spec.func) or "").rsplit(".", 1)[-1] not in ("LayerSpec", "TiedLayerSpec"):
        return "other", None
    args = [a for a in spec.args if a.keyword is None]
    first = args[1] if (dotted(spec.func) or "").endswith("TiedLayerSpec") and len(args) > 1 else (args[0] if args else None)
    name = code(first.value) if first is not None else ""
    if name.startswith("*"):  # porter's template: LayerSpec(*embedding, ...)
        name = "EmbeddingPipe"
    if "Embedding" in name and not any(a.keyword and a.keyword.value == "forward_fn" for a in spec.args):
        return "embedding", name
    if "Norm" in name or "norm" in name:
        return "norm", name
    if "TransformerLayer" in name:
        return "layer", name
    return "head", name


def _flat(body):
    """The statements in order, an `if`/`else` replaced by its first branch (same count)."""
    for stmt in body:
        if isinstance(stmt, cst.If) and stmt.orelse is not None:
            if _if_count(stmt) is None:
                raise ValueError("branches append different specs")
            yield from _flat(stmt.body.body)
        elif isinstance(stmt, cst.If):
            continue
        else:
            yield stmt


def read_order(init: cst.FunctionDef) -> PipeOrder | None:
    """The spec order of a PipelineModule's __init__, or None when it cannot be read."""
    try:
        return _read_order(init)
    except ValueError:
        return None


def _read_order(init: cst.FunctionDef) -> PipeOrder | None:
    if not any(_is_specs_call(c, "append") for c in findall(init, m.Call())):
        return None
    index, embedding, first, after = 0, None, None, 0
    found: dict[str, int] = {}
    head_class = None
    for stmt in _flat(init.body.body):
        if isinstance(stmt, cst.If):
            continue
        if isinstance(stmt, cst.For) and any(_is_specs_call(c, "append") for c in findall(stmt, m.Call())):
            if first is not None:
                return None
            first = index
            continue
        if isinstance(stmt, cst.SimpleStatementLine) and any(
                isinstance(s, cst.Expr) and _is_specs_call(s.value, "extend") for s in stmt.body):
            if first is not None:
                return None
            first = index
            continue
        for call in _appends(stmt):
            kind, name = _kind(call)
            if first is None:
                if kind == "embedding" and embedding is None:
                    embedding = index
                index += 1
            else:
                if kind in ("norm", "head") and kind not in found:
                    found[kind] = after
                    if kind == "head":
                        head_class = name
                after += 1
    if embedding is None or first is None:
        return None
    return PipeOrder(embedding, first, found.get("norm"), found.get("head"), head_class)


def head_key(module: cst.Module | None, head_class: str | None) -> str | None:
    """`<attr>.weight` of the head class's linear (`self.<attr> = ...ColumnParallelLinear(...)`)."""
    if module is None or head_class is None:
        return None
    cls = class_named(module, head_class)
    if cls is None:
        return None
    for assign in findall(cls, m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self")))])):
        if isinstance(assign.value, cst.Call) and (dotted(assign.value.func) or "").endswith("ColumnParallelLinear"):
            return f"{assign.targets[0].target.attr.value}.weight"
    return None
