"""Repair of a reused rotary embedding that returns (cos, sin) where attention takes angles.

The tree's `RotaryEmbedding.forward` returns `[angles.cos(), angles.sin()]` (microsoft's
FPDT rework), but its `apply_rotary_pos_emb(t, freqs)` takes the angles and computes their
cos and sin itself, and attention reads a pair as (query angles, key angles). So the plain
model rotates the query by cos(cos θ) and the key by the sine table (silently wrong), and the
pipe path's `RotaryEmbedding(...)(seq).to(device)` fails on the list. The repair hands the
angles on again, as the tree did before (and as every caller but the unpacking one expects).
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, dotted, mentions, statements, with_comment
from porter.differences.rotary.detect import _pair
from porter.edits.base import Rewrite


class RotaryReturnsAngles(Rewrite):
    """RotaryEmbedding.forward returns its angle table instead of the pair [cos, sin] of it.

    Why: the module's own apply_rotary_pos_emb takes the angles (it computes cos and sin), and
    attention splits any pair it gets into (query angles, key angles): with the pair the query
    is rotated by cos(cos θ) and the key by sin θ, and `.to(device)` on the list fails.
    """

    construct = "`return [x.cos(), x.sin()]` (or `r = [x.cos(), x.sin()]; return r`)"

    cls: str
    func: str
    angles: str

    def rewrite_body(self, body):
        pair_names = {s.body[0].targets[0].target.value for s in body
                      if isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.Assign)
                      and isinstance(s.body[0].targets[0].target, cst.Name) and _pair(s.body[0].value) == self.angles}
        out, changed = [], False
        for stmt in body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                out.append(stmt)
                continue
            small = stmt.body[0]
            if isinstance(small, cst.Assign) and isinstance(small.targets[0].target, cst.Name) \
                    and small.targets[0].target.value in pair_names:
                changed = True
                continue  # the pair's statement goes; the return hands the angles on
            if isinstance(small, cst.Return) and small.value is not None and (
                    _pair(small.value) == self.angles
                    or (isinstance(small.value, cst.Name) and small.value.value in pair_names)):
                new = statements(f"return {self.angles}")[0]
                new = with_comment(new, "the angles: apply_rotary_pos_emb takes them (it computes cos and sin)")
                out.append(new.with_changes(leading_lines=[*stmt.leading_lines, *new.leading_lines]))
                changed = True
                continue
            out.append(stmt)
        if not changed:
            if any(isinstance(r.value, cst.Name) and r.value.value == self.angles for r in findall(body[-1], m.Return())):
                self.already_done()
            else:
                self.missing(f"no `[{self.angles}.cos(), {self.angles}.sin()]` returned")
            return body
        self.anchored()
        return out


class RotaryAnglesNotUnpacked(Rewrite):
    """The language model keeps the rotary embedding's angles whole instead of unpacking (cos, sin).

    Why: with RotaryReturnsAngles the embedding returns one angle table (the pair it unpacked
    is gone); attention duplicates it for query and key, as the module's apply_rotary_pos_emb
    expects. The statements that only touched the pair's halves (dtype casts, no-checkpointing
    marks, the tuple it rebuilt) go with it.
    """

    construct = "`a, b = self.<rotary>(...)` and `<name> = (a..., b...)`"

    cls: str
    func: str
    attr: str

    def _unpacks(self, stmt) -> bool:
        return isinstance(stmt, cst.SimpleStatementLine) and bool(findall(stmt, m.Assign(
            targets=[m.AssignTarget(target=m.Tuple())],
            value=m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(self.attr))))))

    def rewrite_body(self, body):
        new = self._rewrite(list(body))
        if new is None:
            calls = m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(self.attr)))
            if any(findall(s, calls) for s in body):
                self.already_done()
            else:
                self.missing(f"no `a, b = self.{self.attr}(...)`")
            return body
        self.anchored()
        return new

    def _rewrite(self, stmts):
        at = next((i for i, s in enumerate(stmts) if self._unpacks(s)), None)
        if at is not None:
            return self._replace(stmts, at)
        for i, stmt in enumerate(stmts):
            if isinstance(stmt, cst.If):
                inner = self._rewrite(list(stmt.body.body))
                if inner is not None:
                    return [*stmts[:i], stmt.with_changes(body=stmt.body.with_changes(body=inner)), *stmts[i + 1:]]
                if isinstance(stmt.orelse, cst.Else):
                    inner = self._rewrite(list(stmt.orelse.body.body))
                    if inner is not None:
                        orelse = stmt.orelse.with_changes(body=stmt.orelse.body.with_changes(body=inner))
                        return [*stmts[:i], stmt.with_changes(orelse=orelse), *stmts[i + 1:]]
        return None

    def _replace(self, stmts, at):
        assign = stmts[at].body[0]
        halves = [e.value.value for e in assign.targets[0].target.elements if isinstance(e.value, cst.Name)]
        users = [i for i, s in enumerate(stmts) if i > at and any(mentions(s, h) for h in halves)]
        rebuilt = [i for i in users if isinstance(stmts[i], cst.SimpleStatementLine)
                   and isinstance(stmts[i].body[0], cst.Assign)
                   and isinstance(stmts[i].body[0].targets[0].target, cst.Name)
                   and isinstance(stmts[i].body[0].value, cst.Tuple)
                   and assigned_names(stmts[i]).isdisjoint(halves)]
        if len(rebuilt) != 1 or rebuilt[0] != max(users):
            return None
        target = stmts[rebuilt[0]].body[0].targets[0].target.value
        call = dotted(assign.value.func)
        new = stmts[at].with_changes(body=[cst.Assign(targets=[cst.AssignTarget(target=cst.Name(target))],
                                                      value=assign.value)])
        if call is None:
            return None
        return [new if i == at else s for i, s in enumerate(stmts) if i == at or i not in users]
