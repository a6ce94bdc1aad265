"""Rewrites for rotary position embeddings: attention rotates q and k, and the language model keeps no learned position table."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    assigned_names,
    code,
    mentions,
    statements,
    with_comment,
)
from porter.edits.base import Rewrite, indent_continuations, is_docstring


class AddRotaryEmbedding(Rewrite):
    """Create the rotary embedding in attention's `__init__` when the argument asks for it.

    Why: rotary replaces learned positions with a rotation of query and key by position.
    Its cos/sin cache is per attention head dimension, so it lives with attention.
    """

    construct = "ParallelAttention.__init__ with `self.hidden_size_per_attention_head`"

    func = "__init__"
    cls: str
    test: str
    head_dim: str
    theta: str

    def rewrite_body(self, body):
        if self.recognised(body, "self.rotary_emb"):
            return body
        if not any(mentions(s, self.head_dim) for s in body):
            self.missing(f"no {self.head_dim} in __init__")
            return body
        self.anchored()
        new = statements(
            f"""
            self.rotary_emb = None
            if {self.test}:
                self.rotary_emb = RotaryEmbedding({self.head_dim}, theta={self.theta})
            """
        )
        new[0] = with_comment(new[0], "Rotary position embedding (applied to query and key in forward).")
        return body + new


class ApplyRotaryEmbedding(Rewrite):
    """Rotate query and key right after they are split out of the fused QKV projection.

    Why: RoPE must see per-head query/key `[sq, b, np, hn]` before scores are computed and
    before cached keys are concatenated (cached keys are already rotated, so new ones start
    at the cache's length).
    """

    construct = "the statement in forward that binds `query_layer` and `key_layer`"

    cls: str
    func: str
    query: str = "query_layer"
    key: str = "key_layer"
    past: str | None = "layer_past"

    def rewrite_body(self, body):
        if self.recognised(body, "self.rotary_emb"):
            return body
        binds = None
        for i, stmt in enumerate(body):
            names = set()
            for assign in findall(stmt, m.Assign()):
                for target in assign.targets:
                    for node in findall(target.target, m.Name()):
                        names.add(node.value)
            if self.query in names and self.key in names:
                binds = i
                break
        if binds is None:
            self.missing(f"no statement assigns both {self.query} and {self.key}")
            return body
        self.anchored()
        offset = f"0 if {self.past} is None else {self.past}[0].size(0)" if self.past else "0"
        new = statements(
            f"""
            if self.rotary_emb is not None:
                offset = {offset}  # cached keys are rotated already
                {self.query}, {self.key} = self.rotary_emb({self.query}, {self.key}, offset=offset)
            """
        )
        new[0] = with_comment(new[0], "Rotary position embedding: rotate query and key [sq, b, np, hn].")
        return body[: binds + 1] + new + body[binds + 1 :]


POSITIONS = "self.position_embeddings"


def _runs(body, pred):
    """Maximal runs [start, end) of consecutive statements satisfying pred."""
    runs, start = [], None
    for i, stmt in enumerate(body + [None]):
        if stmt is not None and pred(stmt):
            start = i if start is None else start
        elif start is not None:
            runs.append((start, i))
            start = None
    return runs


def _guard(stmts, test, orelse=None):
    block = statements(f"if {test}:\n    pass")[0]
    block = block.with_changes(
        body=block.body.with_changes(
            body=[indent_continuations(s.with_changes(leading_lines=[]) if i == 0 else s) for i, s in enumerate(stmts)]
        ),
        leading_lines=stmts[0].leading_lines,
    )
    if orelse:
        block = block.with_changes(orelse=cst.Else(body=cst.IndentedBlock(body=orelse)))
    return block


class EmbeddingPositionsInit(Rewrite):
    """Create the learned position table only when the position embedding is learned.

    Why: with rotary there is no learned position embedding; the table must not exist (it
    would be trained, saved and added to the words for nothing). The statements that create
    and initialise `self.position_embeddings` are guarded; otherwise it is None.
    """

    construct = "`self.position_embeddings = ...` in Embedding.__init__"

    func = "__init__"
    cls: str
    learned_test: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.test) == self.learned_test):
            return body
        runs = _runs(body, lambda s: mentions(s, POSITIONS) or "_position_embeddings_key" in code(s))
        if not runs:
            self.missing(f"no statement creates {POSITIONS}")
            return body
        self.anchored()
        start, end = runs[0]
        none = statements(f"{POSITIONS} = None")
        guarded = _guard(body[start:end], self.learned_test, orelse=none)
        out = body[:start] + [guarded] + body[end:]
        if not any(m.matches(s, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("args"))])])) for s in out[:start]):
            out = out[:start] + statements("args = get_args()") + out[start:]
        return out


class EmbeddingPositionsForward(Rewrite):
    """Add the learned positions to the word embeddings only when there is a table.

    Why: `embeddings = words_embeddings + position_embeddings` becomes an if/else on
    `self.position_embeddings is not None`; with rotary the embedding is the words alone.
    """

    construct = "`pos = self.position_embeddings(ids)` and `emb = words + pos` in forward"

    func = "forward"
    cls: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.test) == f"{POSITIONS} is not None"):
            return body
        lookup = next((i for i, s in enumerate(body) if mentions(s, POSITIONS)), None)
        if lookup is None:
            self.missing(f"no call of {POSITIONS} in forward")
            return body
        local = findall(body[lookup], m.Assign(targets=[m.AssignTarget(target=m.Name())]))
        if not local:
            self.missing(f"{POSITIONS}(...) is not assigned to a local name")
            return body
        pos_name = local[0].targets[0].target.value
        total = next(
            (
                i for i in range(lookup + 1, len(body))
                if findall(body[i], m.Assign(value=m.BinaryOperation(operator=m.Add(), right=m.Name(pos_name))))
            ),
            None,
        )
        if total is None:
            self.missing(f"no `x = words + {pos_name}` after the position lookup")
            return body
        add = findall(body[total], m.Assign(value=m.BinaryOperation(operator=m.Add(), right=m.Name(pos_name))))[0]
        target = code(add.targets[0].target)
        words = code(add.value.left)
        self.anchored()
        guarded = _guard(body[lookup : total + 1], f"{POSITIONS} is not None", orelse=statements(f"{target} = {words}"))
        return body[:lookup] + [guarded] + body[total + 1 :]


class GuardPositionsState(Rewrite):
    """Save and load the position table only when it exists.

    Why: the checkpoint methods read `self.position_embeddings` unconditionally; with rotary
    it is None (or, in a tree that gates the table on a flag of its own, absent). The
    statements about it are guarded with `if self.position_embeddings is not None:`, or with
    the tree's own gate (`if self.use_position:`). An entry of a dict literal (`d = {..., key: table.state_dict(), ...}`) is
    moved out of the literal into a guarded `d[key] = ...`. A statement that binds a name
    used after it cannot be guarded safely: then the rewrite refuses rather than guess.
    """

    construct = "statements using the position table in a checkpoint method"

    cls: str
    func: str
    test: str = f"{POSITIONS} is not None"

    def rewrite_body(self, body):
        test = self.test
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.test) == test):
            return body
        body = [moved for stmt in body for moved in _split_dict_entry(stmt, test)]
        runs = _runs(body, lambda s: _uses_positions(s) and not (isinstance(s, cst.If) and code(s.test) == test))
        split = any(isinstance(s, cst.If) and code(s.test) == test for s in body)
        if not runs and not split:
            self.missing(f"no statement uses {POSITIONS}")
            return body
        for start, end in runs:
            bound = {n for s in body[start:end] for n in _bound_names(s)}
            live = sorted(n for n in bound if _read_before_written(body[end:], n))
            if live:
                self.missing(f"statements using {POSITIONS} also bind {', '.join(live)}, read after them")
                return body
        self.anchored()
        out = list(body)
        for start, end in reversed(runs):
            out[start:end] = [_guard(out[start:end], test)]
        return out


def _uses_positions(stmt: cst.CSTNode) -> bool:
    return mentions(stmt, POSITIONS) or "_position_embeddings_key" in code(stmt)


def _bound_names(stmt: cst.CSTNode) -> set[str]:
    names = set()
    for assign in findall(stmt, m.Assign()):
        for target in assign.targets:
            if isinstance(target.target, cst.Name):
                names.add(target.target.value)
    return names


def _read_before_written(stmts, name: str) -> bool:
    """Could `name` be read by `stmts` before they assign it? (conservative: True when unsure)"""
    for stmt in stmts:
        if isinstance(stmt, cst.SimpleStatementLine):
            stores = {
                id(t.target) for a in findall(stmt, m.Assign()) for t in a.targets if isinstance(t.target, cst.Name)
            }
            if any(n.value == name and id(n) not in stores for n in findall(stmt, m.Name())):
                return True
            if any(n.value == name for n in findall(stmt, m.Name()) if id(n) in stores):
                return False
            continue
        head = [getattr(stmt, attr) for attr in ("test", "iter", "items") if hasattr(stmt, attr)]
        if any(n.value == name for node in head for n in findall(node, m.Name()) if isinstance(node, cst.CSTNode)):
            return True
        blocks = [stmt.body] + [b for b in (getattr(stmt, "orelse", None),) if b is not None]
        for block in blocks:
            inner = block.body.body if isinstance(block, (cst.Else,)) else getattr(block, "body", [])
            if isinstance(block, cst.If):
                inner = [block]
            if _read_before_written(list(inner), name):
                return True
    return False


def _split_dict_entry(stmt: cst.BaseStatement, test: str) -> list[cst.BaseStatement]:
    """`d = {a: x, key: <positions>}` -> `d = {a: x}` + `if test: d[key] = <positions>`."""
    if not m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.Dict())])):
        return [stmt]
    assign = stmt.body[0]
    keep, moved = [], []
    for element in assign.value.elements:
        (moved if isinstance(element, cst.DictElement) and _uses_positions(element) else keep).append(element)
    if not moved or not keep:
        return [stmt]
    name = assign.targets[0].target.value
    last = assign.value.elements[-1]
    if last is not keep[-1]:  # the literal's closing layout moves to the new last entry
        keep[-1] = keep[-1].with_changes(comma=last.comma)
    head = stmt.with_changes(body=[assign.with_changes(value=assign.value.with_changes(elements=keep))])
    guarded = [
        statements(f"{name}[{code(e.key)}] = {code(e.value)}")[0] for e in moved
    ]
    return [head, _guard(guarded, test)]


class NarrowPositionGate(Rewrite):
    """Turn the Embedding's own position-table flag off when a feature (rotary) is on.

    Why: Habana's Embedding already creates, adds and skips its learned position table
    under `self.use_position` (a constructor parameter), but only its pipeline callers pass
    it, so the non-pipe model would build a table rotary never uses. Right after both the
    flag and `args` are set, the flag is cleared when the feature's test is true: every
    caller gets the same answer, and the tree's own guards do the rest.
    """

    construct = "`self.<gate> = <parameter>` and `args = get_args()` in Embedding.__init__"

    func = "__init__"
    cls: str
    gate: str
    test: str

    def rewrite_body(self, body):
        new = statements(f"if {self.test}:\n    {self.gate} = False")[0]
        new = with_comment(new, "rotary positions are applied in attention: no learned table")
        if self.recognised(body, lambda s: code(s) == code(new)):
            return body
        sets_gate = [i for i, s in enumerate(body) if self.gate in assigned_names(s) and isinstance(s, cst.SimpleStatementLine)]
        sets_args = [
            i for i, s in enumerate(body)
            if m.matches(s, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("args"))])]))
        ]
        if not sets_gate:
            self.missing(f"no `{self.gate} = ...` statement in __init__")
            return body
        if not sets_args:
            body = body[: sets_gate[0] + 1] + statements("args = get_args()") + body[sets_gate[0] + 1 :]
            sets_args = [sets_gate[0] + 1]
        self.anchored()
        at = max(sets_gate[0], sets_args[0]) + 1
        return body[:at] + [new] + body[at:]


class HandPositionsToRotary(Rewrite):
    """The Embedding hands the batch's position ids to the rotary embedding (`use_positions`).

    Why: rotary rotates query and key inside attention, which never sees the position ids the
    model is called with; without this, --reset-position-ids and explicit positions would be
    ignored silently (attention would rotate by 0..s-1). The call goes first in
    `Embedding.forward`, which receives the ids in the plain model and on the pipe's first stage.
    """

    construct = "`def forward(self, input_ids, position_ids, ...)` of the Embedding"

    cls: str
    func: str = "forward"
    param: str = "position_ids"

    def rewrite_body(self, body):
        if self.recognised(body, "use_positions"):
            return body
        if not any(mentions(s, self.param) for s in body):
            self.missing(f"no use of {self.param} in the function")
            return body
        self.anchored()
        call = with_comment(statements(f"use_positions({self.param})")[0],
                            "the rotary embedding rotates by these positions (rotary_embedding.use_positions)")
        at = 1 if body and is_docstring(body[0]) else 0
        return [*body[:at], call, *body[at:]]
