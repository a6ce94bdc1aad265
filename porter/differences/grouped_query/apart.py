"""A tree's own grouped-query attention that keeps the query and the key/value projections apart.

Some trees (deep-spin and OpenLLM-France forks of microsoft's, 2024) implement GQA themselves
with two projections instead of the fused `query_key_value`: with fewer key/value heads than
query heads their ParallelAttention builds `self.<q> = ColumnParallelLinear(h, np * hn)` and
`self.<kv> = ColumnParallelLinear(h, 2 * ng * hn)`, views the key/value output as
[ng, 2 * hn] and cuts each group's last dimension in halves (key, value). With as many as
query heads it keeps the fused projection. porter's weights and probes read the fused one;
`split_projections()` reads the tree's choice (its flag comparing the two head counts, the
branch that builds the pair, how the pair's output is split), so the layout can name the two
projections (WeightLayout.gqa_query, gqa_key_value) and the weights and probes follow them.
`found` says what porter found when the tree builds such a pair that it cannot read: the port
is refused then (a port whose weights would go to the wrong tensors verifies wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall, function_named
from porter.cst.nodes import code, dotted


@dataclass(frozen=True)
class ApartProjections:
    """The tree's GQA projections, read from ParallelAttention; `query`/`key_value` empty with
    `found` set: the tree has such a pair porter cannot read (refused)."""

    query: str = ""
    key_value: str = ""
    found: str = ""


def _column_linears(body: cst.CSTNode) -> list[tuple[str, cst.Call]]:
    """(attr, call) of each `self.attr = ...ColumnParallelLinear(...)` directly in body's statements."""
    out = []
    for assign in findall(body, m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self")))],
                                         value=m.Call())):
        name = (dotted(assign.value.func) or "").rsplit(".", 1)[-1]
        if name == "ColumnParallelLinear":
            out.append((assign.targets[0].target.attr.value, assign.value))
    return out


def _doubled(call: cst.Call) -> bool:
    """The linear's output size (second argument) is `2 * x`: a key and a value per head."""
    if len(call.args) < 2:
        return False
    size = call.args[1].value
    return isinstance(size, cst.BinaryOperation) and isinstance(size.operator, cst.Multiply) and code(size.left) == "2"


def _key_value(text: str) -> bool:
    """A count of key/value heads (`num_key_value_heads`, `kv_heads`), not of query heads."""
    return "key_value" in text or "kv" in text


def _gqa_flags(init: cst.FunctionDef) -> set[str]:
    """`self.<flag>` assigned `<a> != <b>` where one side counts query heads, the other key/value heads."""
    flags = set()
    for assign in findall(init, m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self")))])):
        value = assign.value
        if not isinstance(value, cst.Comparison) or len(value.comparisons) != 1:
            continue
        if not isinstance(value.comparisons[0].operator, cst.NotEqual):
            continue
        left, right = code(value.left), code(value.comparisons[0].comparator)
        if "heads" in left and "heads" in right and _key_value(left) != _key_value(right):
            flags.add(f"self.{assign.targets[0].target.attr.value}")
    return flags


def _branches(stmt: cst.If):
    """(test, body) of each branch of an if/elif chain (else: test None)."""
    node = stmt
    while isinstance(node, cst.If):
        yield node.test, node.body
        node = node.orelse
    if isinstance(node, cst.Else):
        yield None, node.body


def _positive(test: cst.BaseExpression, flag: str) -> bool:
    """`flag` is a conjunct of test as it is (`... and self.use_gqa`), not negated."""
    parts = [test]
    while parts:
        node = parts.pop()
        if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, cst.And):
            parts += [node.left, node.right]
        elif code(node) == flag:
            return True
    return False


def _splits_key_value(forward: cst.FunctionDef, kv: str) -> bool:
    """forward views `self.<kv>(...)`'s output as [..., groups, 2 * hn] and cuts its last dimension
    in two (split_tensor_along_last_dim(x, 2)): per key/value head, its key then its value."""
    outputs = set()
    for assign in findall(forward, m.Assign(value=m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(kv))))):
        target = assign.targets[0].target
        first = target.elements[0].value if isinstance(target, (cst.Tuple, cst.List)) else target
        if isinstance(first, cst.Name):
            outputs.add(first.value)
    if not outputs:
        return False
    text = code(forward)
    for call in findall(forward, m.Call()):
        name = (dotted(call.func) or "").rsplit(".", 1)[-1]
        if name == "split_tensor_along_last_dim" and len(call.args) == 2 and code(call.args[1].value) == "2" \
                and code(call.args[0].value) in outputs:
            return any(f"{o} = {o}.view(" in text for o in outputs) and "2 * self." in text
    return False


def split_projections(transformer: cst.Module) -> ApartProjections | None:
    """The query and key/value projections ParallelAttention uses under GQA instead of the fused
    one, when it builds such a pair in a branch taken with fewer key/value heads than query heads;
    None when it has no such branch."""
    attention = class_named(transformer, "ParallelAttention")
    init = function_named(attention, "__init__") if attention is not None else None
    if init is None:
        return None
    flags = _gqa_flags(init)
    if not flags:
        return None
    for stmt in findall(init, m.If()):
        for test, body in _branches(stmt):
            if test is None or not any(_positive(test, flag) for flag in flags):
                continue
            linears = _column_linears(body)
            if len(linears) != 2:
                continue
            doubled = [attr for attr, call in linears if _doubled(call)]
            if len(doubled) != 1:
                return ApartProjections(found=f"ParallelAttention.__init__ under `{code(test)}`: "
                                              f"{', '.join(a for a, _ in linears)}, none of them 2 * (key/value heads) wide")
            kv = doubled[0]
            query = next(a for a, _ in linears if a != kv)
            forward = function_named(attention, "forward")
            if forward is None or not _splits_key_value(forward, kv):
                return ApartProjections(found=f"ParallelAttention.forward: self.{kv}'s output is not viewed as "
                                              "[groups, 2 * hn] and cut in key | value halves")
            return ApartProjections(query, kv)
    return None
