"""Rewrites of the tree's ParallelAttention for grouped-query attention (GQA, MQA).

With ng key/value heads shared by np query heads (np/ng each), the fused QKV projection is
laid out per group: [ng, np/ng + 2, hn] (a group's queries, then its key, then its value).
With ng = np this is exactly the tree's per-head [np, 3, hn] layout, so GPT and multi-head
models are unchanged; a tensor-parallel rank holds whole groups.
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, dotted, expression, insert_before, mentions, statements, with_comment
from porter.edits.base import Rewrite
from porter.profile.attention import core_span

GROUPS = "self.num_query_groups"
GROUPS_PER_PARTITION = "self.num_query_groups_per_partition"
FUSED_MARK = "fused_attention_applies"


class GroupedQKVProjection(Rewrite):
    """Size the fused QKV projection for ng key/value heads: (np + 2 * ng) * hn wide.

    Why: GQA gives keys and values fewer heads than queries; the projection shrinks to the
    query width plus two group widths. The group count follows the switch (`groups`, the
    query head count when the switch is unset), and each tensor-parallel rank holds ng/p of
    them: the argument checks refuse a tensor-parallel size that does not divide ng.
    """

    construct = "`self.num_attention_heads_per_partition = ...` and `self.query_key_value = ColumnParallelLinear(h, 3 * projection_size, ...)`"

    func = "__init__"
    cls: str
    groups: str
    attr: str = "query_key_value"

    def rewrite_body(self, body):
        if self.recognised(body, GROUPS):
            return body
        heads = next((i for i, s in enumerate(body) if "self.num_attention_heads_per_partition" in assigned_names(s)), None)
        if heads is None:
            self.missing("no `self.num_attention_heads_per_partition = ...`")
            return body
        width = None
        for stmt in body[heads + 1:]:
            for assign in findall(stmt, m.Assign(value=m.Call())):
                target = assign.targets[0].target
                if code(target) == f"self.{self.attr}" and len(assign.value.args) >= 2:
                    arg = assign.value.args[1]
                    if arg.keyword is None and code(arg.value).replace(" ", "").startswith("3*"):
                        width = (stmt, assign.value, arg)
        if width is None:
            self.missing(f"no `self.{self.attr} = Linear(h, 3 * <projection>, ...)`")
            return body
        self.anchored()
        stmt, call, arg = width
        projection = code(arg.value).replace(" ", "")[2:]
        new_arg = arg.with_changes(value=expression(
            f"{projection} + 2 * {GROUPS} * self.hidden_size_per_attention_head"))
        args = [new_arg if a is arg else a for a in call.args]
        new_stmt = stmt.deep_replace(call, call.with_changes(args=args))
        # the groups per rank are divided as the tree divides the heads (mpu.divide(..., world_size),
        # core.utils.divide(..., world_size), ...)
        divide = next((c for c in findall(body[heads], m.Call())
                       if (dotted(c.func) or "").rsplit(".", 1)[-1] == "divide" and len(c.args) == 2), None)
        divider, ranks = (dotted(divide.func), code(divide.args[1].value)) if divide is not None \
            else ("mpu.divide", "world_size")
        groups = statements(
            f"""
            {GROUPS} = {self.groups} or self.num_attention_heads
            {GROUPS_PER_PARTITION} = {divider}({GROUPS}, {ranks})
            """
        )
        groups[0] = with_comment(groups[0], "Grouped-query attention: ng key/value heads, each shared by np/ng query heads.")
        out = []
        for i, s in enumerate(body):
            out.append(new_stmt if s is stmt else s)
            if i == heads:
                out.extend(groups)
        return out


class GroupedQKVSplit(Rewrite):
    """Split the fused QKV output by groups: queries [sq, b, np, hn], keys and values [sq, b, ng, hn].

    Why: the tree views the projection as [np, 3 * hn] and cuts it in three, which holds only
    for one key/value head per query head. `split_query_key_value` views it as
    [ng, np/ng + 2, hn] instead (the same thing when ng = np). Where the tree's own attention
    math follows (it takes one key/value head per query head), keys and values are repeated
    np/ng times just before it: at the top of the unfused branch when porter's fused
    attention is there (the fused kernel takes the groups as they are), else right after the
    split.
    """

    construct = "`x = x.view(...np, 3 * hn)` and `(query_layer, key_layer, value_layer) = split(x, 3)`"

    cls: str
    func: str

    @staticmethod
    def _binds_qkv(stmt) -> bool:
        return {"query_layer", "key_layer", "value_layer"} <= assigned_names(stmt)

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: findall(s, m.Call(func=m.Name("split_query_key_value")))):
            return body
        # The split is a statement of the function, or of the first branch of an `if` (self- vs
        # cross-attention), where its view and shape statements are too.
        index = next((i for i, s in enumerate(body) if self._binds_qkv(s)), None)
        if index is not None and isinstance(body[index], cst.If):
            stmt = body[index]
            inner = self._rewrite_statements(list(stmt.body.body))
            new_body = None if inner is None else \
                [*body[:index], stmt.with_changes(body=stmt.body.with_changes(body=inner)), *body[index + 1:]]
        elif index is not None:
            new_body = self._rewrite_statements(list(body))
        else:
            self.missing("no statement binds query_layer, key_layer and value_layer together")
            return body
        if new_body is None:
            return body
        new_body = self._insert_repeat(new_body)
        if self._missing is not None:
            return body
        self.anchored()
        return new_body

    def _rewrite_statements(self, stmts):
        split = next((i for i, s in enumerate(stmts) if self._binds_qkv(s)), None)
        call = next(iter(findall(stmts[split], m.Call())), None) if split is not None else None
        if call is None or not call.args:
            self.missing("the q, k, v split is not a call on the fused projection's output")
            return None
        mixed = code(call.args[0].value)
        start = split
        # the statements that reshape the fused output just before the split: `x = x.view(*shape)`
        # and the shape it views to (the projection that binds x stays)
        def reshapes(stmt):
            names = assigned_names(stmt)
            if names == {mixed}:
                return any(mentions(a.value, mixed) for a in findall(stmt, m.Assign()))
            return bool(names) and all(n.endswith("shape") for n in names)

        while start > 0 and reshapes(stmts[start - 1]):
            start -= 1
        new = statements(
            f"""
            query_layer, key_layer, value_layer = split_query_key_value(
                {mixed}, {GROUPS_PER_PARTITION}, self.hidden_size_per_attention_head)
            """
        )[0]
        new = with_comment(new, "[sq, b, ng * (np/ng + 2) * hn] -> q [sq, b, np, hn], k and v [sq, b, ng, hn]")
        blank = [line for line in stmts[start].leading_lines if line.comment is None]  # the removed lines' comments go too
        new = new.with_changes(leading_lines=[*blank, *new.leading_lines])
        return [*stmts[:start], new, *stmts[split + 1:]]

    def _insert_repeat(self, body):
        """The repeat goes right before the tree's unfused math: the top of the fused branch's
        `else:` when porter's fused attention is there, else the start of the core attention."""
        repeat = statements(
            "key_layer, value_layer = repeat_key_value(key_layer, value_layer, self.num_attention_heads_per_partition)"
        )[0]
        repeat = with_comment(repeat, "the attention math below takes one key/value head per query head")

        def before(stmts, at):
            """stmts with the repeat before stmts[at], which keeps its comments (the blank lines go first)."""
            return insert_before(stmts, at, [repeat])

        for index, stmt in enumerate(body):
            if isinstance(stmt, cst.If) and mentions(stmt.test, FUSED_MARK) and isinstance(stmt.orelse, cst.Else):
                inner = before(list(stmt.orelse.body.body), 0)
                new_if = stmt.with_changes(orelse=stmt.orelse.with_changes(body=stmt.orelse.body.with_changes(body=inner)))
                return [*body[:index], new_if, *body[index + 1:]]
        span = core_span(body)
        if span is not None:
            return before(list(body), span.start)
        # the math in a module of its own (`self.core_attention(query_layer, key_layer, ...)`,
        # microsoft mid-2023's CoreAttention), or inline in a shape porter does not delimit
        # (BigScience's, with ALiBi): right after the split, so that the key/value cache and every
        # path to the math (checkpointed, flash) get one key/value head per query head
        split = next((i for i, s in enumerate(body) if findall(s, m.Call(func=m.Name("split_query_key_value")))), None)
        if split is None or not any(mentions(s, "key_layer") and mentions(s, "value_layer") for s in body[split + 1:]):
            self.missing("no attention math (torch.baddbmm scores ... context_layer, or a call taking "
                         "key_layer and value_layer) after the q, k, v split")
            return body
        return [*body[:split + 1], repeat, *body[split + 1:]]
