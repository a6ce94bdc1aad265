"""Rewrites of megatron/model/language_model.py: no learned position table with rotary."""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from porter.edits.base import Rewrite, code, indent_continuations, mentions, statements

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

    def __init__(self, cls: str, learned_test: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = "__init__"
        self.learned_test = learned_test

    def rewrite_body(self, body):
        if any(isinstance(s, cst.If) and code(s.test) == self.learned_test for s in body):
            self.already_done()
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

    def __init__(self, cls: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = "forward"

    def rewrite_body(self, body):
        if any(isinstance(s, cst.If) and code(s.test) == f"{POSITIONS} is not None" for s in body):
            self.already_done()
            return body
        lookup = next((i for i, s in enumerate(body) if mentions(s, POSITIONS)), None)
        if lookup is None:
            self.missing(f"no call of {POSITIONS} in forward")
            return body
        local = m.findall(body[lookup], m.Assign(targets=[m.AssignTarget(target=m.Name())]))
        if not local:
            self.missing(f"{POSITIONS}(...) is not assigned to a local name")
            return body
        pos_name = local[0].targets[0].target.value
        total = next(
            (
                i for i in range(lookup + 1, len(body))
                if m.findall(body[i], m.Assign(value=m.BinaryOperation(operator=m.Add(), right=m.Name(pos_name))))
            ),
            None,
        )
        if total is None:
            self.missing(f"no `x = words + {pos_name}` after the position lookup")
            return body
        add = m.findall(body[total], m.Assign(value=m.BinaryOperation(operator=m.Add(), right=m.Name(pos_name))))[0]
        target = code(add.targets[0].target)
        words = code(add.value.left)
        self.anchored()
        guarded = _guard(body[lookup : total + 1], f"{POSITIONS} is not None", orelse=statements(f"{target} = {words}"))
        return body[:lookup] + [guarded] + body[total + 1 :]


class GuardPositionsState(Rewrite):
    """Save and load the position table only when it exists.

    Why: the checkpoint methods read `self.position_embeddings` unconditionally; with rotary
    it is None. The statements about it are guarded with `if self.position_embeddings is
    not None:`.
    """

    construct = "statements using the position table in a checkpoint method"

    def __init__(self, cls: str, func: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = func

    def rewrite_body(self, body):
        test = f"{POSITIONS} is not None"
        if any(isinstance(s, cst.If) and code(s.test) == test for s in body):
            self.already_done()
            return body
        runs = _runs(body, lambda s: mentions(s, POSITIONS) or "_position_embeddings_key" in code(s))
        if not runs:
            self.missing(f"no statement uses {POSITIONS}")
            return body
        self.anchored()
        out = list(body)
        for start, end in reversed(runs):
            out[start:end] = [_guard(out[start:end], test)]
        return out

