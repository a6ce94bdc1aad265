"""How the tree's attention splits its fused QKV output: per head, per key/value group, or in thirds."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall
from porter.cst.nodes import code, dotted


@dataclass(frozen=True)
class QKVFacts:
    layout: str | None  # the fused QKV output's layout as the attention splits it (qkv_layout())
    blocked: BlockedSplit | None = None  # a q | k | v thirds split to repair (blocked_split())


def detect(parsed) -> QKVFacts | None:
    transformer = parsed("megatron/model/transformer.py")
    if transformer is None:
        return None
    return QKVFacts(qkv_layout(transformer), blocked_split(transformer))


@dataclass(frozen=True)
class BlockedSplit:
    """A fused QKV output cut into three equal blocks, q | k | v (`w = x.shape[-1] // 3`,
    `query_layer = x[..., :w]...`), next to the tree's own per-group split method."""

    func: str  # the ParallelAttention method holding the blocked split
    fused: str  # the fused projection output it slices (`mixed_x_layer`)
    width: str  # the name bound to `<fused>.shape[-1] // 3`
    split_method: str | None  # ParallelAttention's per-group split: torch.split(x, [groups, 1, 1], dim=-2)
    groups: str | None  # the query heads per key/value group that split takes (`self.num_key_value_groups`)


def _thirds(stmt: cst.CSTNode) -> tuple[str, str] | None:
    """(width, fused) for `width = fused.shape[-1] // 3`."""
    for assign in findall(stmt, m.Assign(value=m.BinaryOperation(operator=m.FloorDivide(), right=m.Integer("3")))):
        target, left = assign.targets[0].target, assign.value.left
        if (isinstance(target, cst.Name) and isinstance(left, cst.Subscript) and isinstance(left.value, cst.Attribute)
                and left.value.attr.value == "shape" and dotted(left.value.value)):
            return target.value, dotted(left.value.value)
    return None


def group_split_method(attention: cst.ClassDef) -> tuple[str, str] | None:
    """(method, groups) of a ParallelAttention method `def m(self, x)` that splits x's
    second-to-last dimension into [groups, 1, 1]: a key/value group's queries, its key, its value."""
    for stmt in attention.body.body:
        if not isinstance(stmt, cst.FunctionDef) or len(stmt.params.params) != 2:
            continue
        for call in findall(stmt, m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("split")))):
            if len(call.args) < 2 or not isinstance(call.args[1].value, cst.List):
                continue
            sizes = [code(e.value) for e in call.args[1].value.elements]
            dim = next((code(a.value) for a in call.args if a.keyword and a.keyword.value == "dim"), None)
            if len(sizes) == 3 and sizes[1:] == ["1", "1"] and dim == "-2":
                return stmt.name.value, sizes[0]
    return None


def blocked_split(transformer: cst.Module) -> BlockedSplit | None:
    """The blocked q | k | v split of ParallelAttention, when it has one (microsoft's FPDT
    rework: right for multi-head attention only if the weights are blocked, wrong under GQA)."""
    attention = class_named(transformer, "ParallelAttention")
    if attention is None:
        return None
    for stmt in attention.body.body:
        if not isinstance(stmt, cst.FunctionDef):
            continue
        found = _thirds(stmt)
        if found is None:
            continue
        width, fused = found
        method, groups = group_split_method(attention) or (None, None)
        return BlockedSplit(stmt.name.value, fused, width, method, groups)
    return None


def qkv_layout(transformer: cst.Module) -> str | None:
    """How ParallelAttention lays out its fused QKV projection's output, from the code that splits it:
    'per_head' ([np, 3 * hn] views), 'per_group' ([ng, np/ng + 2, hn]: the tree's GQA split or
    porter's split_query_key_value; per head when ng = np), 'blocked' (q | k | v thirds), or None."""
    attention = class_named(transformer, "ParallelAttention")
    if attention is None:
        return None
    if blocked_split(transformer) is not None:
        return "blocked"
    text = code(attention)
    if "split_query_key_value" in text or "self.num_key_value_groups + 2" in text:
        return "per_group"
    if "3 * self.hidden_size_per_attention_head" in text:
        return "per_head"
    return None
