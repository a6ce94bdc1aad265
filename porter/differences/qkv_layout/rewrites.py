"""Repair of a fused QKV split that cuts the projection's output into q | k | v thirds.

Some trees (microsoft's FPDT rework of ParallelAttention) split the fused projection's output
as three equal blocks: `w = x.shape[-1] // 3`, `query_layer = x[:, :, :w]...`,
`key_layer = x[:, :, w:2w]...`, `value_layer = x[:, :, 2w:]...`. That is not the layout the
same tree's own per-group split method reads (`torch.split(x, [groups, 1, 1], dim=-2)` on a
[sq, b, ng, np/ng + 2, hn] view), nor the one its checkpoints and earlier code use, and with
fewer key/value heads than query heads the thirds are not even q, k and v (the query block is wider).
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, mentions, statements, with_comment
from porter.edits.base import Rewrite

QKV = ("query_layer", "key_layer", "value_layer")


class GroupedSplitForBlockedThirds(Rewrite):
    """Split the fused QKV output per key/value group with the tree's own split method.

    What: the statements that cut `<fused>` into thirds (`<width> = <fused>.shape[-1] // 3`,
    the three slices binding query_layer, key_layer and value_layer, and the names only those
    slices use) become one call of the tree's per-group split on a
    [sq, b, ng, np/ng + 2, hn] view of `<fused>`.
    Why: the thirds read the weights as q | k | v blocks, while the tree's per-group split (and
    its checkpoints) lay them out per key/value group, a group's queries then its key then its
    value; with one key/value head per query head that is the per-head [np, 3, hn] layout.
    With fewer key/value heads than query heads the thirds are wrong outright (the query block is wider than
    the key and value blocks).
    """

    construct = "`w = x.shape[-1] // 3` and `query_layer = x[..., :w]...`, `key_layer = ...`, `value_layer = ...`"

    cls: str
    func: str
    fused: str
    width: str
    split_method: str
    groups: str
    head_dim: str = "self.hidden_size_per_attention_head"

    def _thirds(self, stmt) -> bool:
        return (isinstance(stmt, cst.SimpleStatementLine) and self.width in assigned_names(stmt)
                and "// 3" in code(stmt))

    def rewrite_body(self, body):
        new = self._rewrite(list(body))
        if new is None:
            calls = m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(self.split_method)))
            if any(findall(s, calls) for s in body):
                self.already_done()
            else:
                self.missing(f"no `{self.width} = {self.fused}.shape[-1] // 3` followed by the q, k, v slices")
            return body
        self.anchored()
        return new

    def _rewrite(self, stmts):
        """stmts with the blocked split replaced, searching nested blocks; None when not there."""
        start = next((i for i, s in enumerate(stmts) if self._thirds(s)), None)
        if start is not None:
            return self._replace(stmts, start)
        for i, stmt in enumerate(stmts):
            if isinstance(stmt, cst.If):
                inner = self._rewrite(list(stmt.body.body))
                if inner is not None:
                    return [*stmts[:i], stmt.with_changes(body=stmt.body.with_changes(body=inner)), *stmts[i + 1:]]
        return None

    def _replace(self, stmts, at):
        slices = [i for i, s in enumerate(stmts) if isinstance(s, cst.SimpleStatementLine)
                  and len(assigned_names(s) & set(QKV)) == 1 and mentions(s, self.width)]
        if sorted(n for i in slices for n in assigned_names(stmts[i])) != sorted(QKV):
            return None
        removed = {at, *slices}
        # names (seq_len, bs) bound only for the slices: their statement goes too
        for i, stmt in enumerate(stmts):
            names = assigned_names(stmt)
            if i in removed or not names or not isinstance(stmt, cst.SimpleStatementLine):
                continue
            users = [j for j, s in enumerate(stmts) if j != i and any(mentions(s, n) for n in names)]
            if users and set(users) <= removed and i < min(slices):
                removed.add(i)
        first = min(removed)
        new = statements(
            f"""
            {', '.join(QKV)} = self.{self.split_method}({self.fused}.view(
                {self.fused}.shape[:-1] + (-1, {self.groups} + 2, {self.head_dim})))
            """
        )[0]
        new = with_comment(new, "[sq, b, ng * (np/ng + 2) * hn] -> [sq, b, ng, np/ng + 2, hn]: each key/value "
                                "group's queries, key and value")
        blank = [line for line in stmts[first].leading_lines if line.comment is None]
        new = new.with_changes(leading_lines=[*blank, *new.leading_lines])
        out = []
        for i, stmt in enumerate(stmts):
            if i == first:
                out.append(new)
            if i not in removed:
                out.append(stmt)
        return out
