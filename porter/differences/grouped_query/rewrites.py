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
from porter.cst.nodes import assigned_names, code, expression, insert_before, mentions, statements, with_comment
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
    them: the argument checks refuse a tensor-parallel size that does not divide ng. The
    groups are divided over the ranks as the tree divides the heads (its own `divide`).
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
        # the heads and their division over the ranks as the tree writes them:
        # `self.num_attention_heads_per_partition = <divide>(<heads>, <world size>)`
        divided = findall(body[heads], m.Assign(value=m.Call()))
        divide = divided[0].value if divided else None
        if divide is None or len(divide.args) != 2 or any(a.keyword or a.star for a in divide.args):
            self.missing("`self.num_attention_heads_per_partition = ...` is not a division of the heads by the "
                         "tensor-parallel size, `divide(heads, world_size)`")
            return body
        divide_func, heads_expr, world = (code(x) for x in (divide.func, divide.args[0].value, divide.args[1].value))
        self.anchored()
        stmt, call, arg = width
        projection = code(arg.value).replace(" ", "")[2:]
        new_arg = arg.with_changes(value=expression(
            f"{projection} + 2 * {GROUPS} * self.hidden_size_per_attention_head"))
        args = [new_arg if a is arg else a for a in call.args]
        new_stmt = stmt.deep_replace(call, call.with_changes(args=args))
        groups = statements(
            f"""
            {GROUPS} = {self.groups} or {heads_expr}
            {GROUPS_PER_PARTITION} = {divide_func}({GROUPS}, {world})
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
    attention is there (the fused kernel takes the groups as they are), else at the start of
    the core attention; where the math is in another module (CoreAttention) or kernel, right
    before this function hands q, k, v on to it, or stores keys into a cache sized for one
    key/value head per query head.
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
        at = self._hand_over(body)
        if at is None:
            self.missing("no core attention (torch.baddbmm scores ... context_layer) after the q, k, v split, "
                         "nor a statement handing query_layer, key_layer and value_layer on to one")
            return body
        if not all(mentions(body[at], name) for name in ("query_layer", "key_layer", "value_layer")):
            repeat = with_comment(repeat.with_changes(leading_lines=()),
                                  "the key/value cache below and the attention math take one key/value head per query head")
        return before(list(body), at)

    @staticmethod
    def _hand_over(body):
        """Where keys and values leave this function, when the attention math is elsewhere (a
        CoreAttention module, a flash kernel): the first statement after the split that stores
        keys or values into a tensor (`memory[...] = key_layer`: a cache the tree sized for one
        key/value head per query head), else the first that reads query, key and value together
        (the call of the core attention, with its branches). Statements before it that rebind
        keys (rotary, the key/value cache's concatenation) act on each head alike, or on the
        groups as they are."""
        split = next((i for i, s in enumerate(body)
                      if findall(s, m.Call(func=m.Name("split_query_key_value")))), None)
        if split is None:
            return None
        qkv = ("query_layer", "key_layer", "value_layer")
        for i in range(split + 1, len(body)):
            stmt = body[i]
            stores = any(isinstance(target.target, cst.Subscript)
                         and (mentions(assign.value, "key_layer") or mentions(assign.value, "value_layer"))
                         for assign in findall(stmt, m.Assign()) for target in assign.targets)
            if stores or all(mentions(stmt, name) for name in qkv):
                return i
        return None


class ReshapeRepeatedKeyValue(Rewrite):
    """Reshape the key and value heads where the unfused attention views them.

    Why: the tree's own GQA repeats each key/value head by `expand` (expanded.py), a tensor
    with a zero stride that `key_layer.view(sk, b * np, -1)` / `value_layer.view(...)` cannot
    take once a batch holds more than one sequence (one key/value head on a rank: MQA, or a
    tensor-parallel size equal to the key/value heads). `reshape` is that very view wherever
    a view is possible and a copy only where it is not: the numbers are the same.
    """

    construct = "`key_layer = key_layer.view(...)` / `value_layer = value_layer.view(...)` in the unfused attention"

    cls: str
    func: str
    names: tuple = ("key_layer", "value_layer")

    def rewrite_body(self, body):
        names = self.names

        class Views(cst.CSTTransformer):
            found = 0
            done = 0

            def leave_Assign(self, original, updated):
                target, value = updated.targets[0].target, updated.value
                if not (isinstance(target, cst.Name) and target.value in names and isinstance(value, cst.Call)
                        and isinstance(value.func, cst.Attribute) and code(value.func.value) == target.value):
                    return updated
                if value.func.attr.value == "reshape":
                    Views.done += 1
                if value.func.attr.value != "view":
                    return updated
                Views.found += 1
                return updated.with_changes(value=value.with_changes(func=value.func.with_changes(
                    attr=cst.Name("reshape"))))

        new = [stmt.visit(Views()) for stmt in body]
        if Views.found:
            self.anchored()
            return new
        if Views.done:
            self.already_done()
            return body
        self.missing("no `key_layer = key_layer.view(...)` nor `value_layer = value_layer.view(...)`")
        return body
