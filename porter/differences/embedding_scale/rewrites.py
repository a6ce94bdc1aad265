"""Rewrites of the tree's Embedding: word embeddings times sqrt(hidden), the factor in their dtype (Gemma)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.nodes import (
    assigned_names,
    code,
    statements,
    with_comment,
)
from porter.edits.base import Rewrite

WORDS = "self.word_embeddings"
SCALE = "self.scale_word_embeddings"


def _sets_args(stmt) -> bool:
    return m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("args"))])]))


class EmbeddingScaleInit(Rewrite):
    """Decide once, when the Embedding is built, whether its word embeddings are scaled.

    Why: Gemma multiplies the token embeddings by sqrt(hidden) before the first layer (the
    tied output projection uses the weight itself, unscaled). `self.scale_word_embeddings =
    <switch test>` goes right after `self.word_embeddings = ...`, with `args = get_args()`
    before it when the constructor has no `args`; the forward pass reads the attribute.
    """

    construct = f"`{WORDS} = ...` in Embedding.__init__"

    func = "__init__"
    cls: str
    test: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: SCALE in assigned_names(s)):
            return body
        at = next((i for i, s in enumerate(body) if WORDS in assigned_names(s) and isinstance(s, cst.SimpleStatementLine)),
                  None)
        if at is None:
            self.missing(f"no `{WORDS} = ...` statement in __init__")
            return body
        self.anchored()
        new = [with_comment(statements(f"{SCALE} = {self.test}")[0],
                            "the word embeddings times sqrt(hidden) (Gemma); the tied output layer uses the weight itself")]
        args_at = next((i for i, s in enumerate(body) if _sets_args(s)), None)
        if args_at is None:
            new = statements("args = get_args()") + new
        else:
            at = max(at, args_at)
        return body[: at + 1] + new + body[at + 1 :]


class EmbeddingScaleForward(Rewrite):
    """Scale the word embeddings by sqrt(hidden), the factor in their dtype, right after the lookup.

    Why: HF's Gemma computes `embeds * torch.tensor(hidden ** 0.5, dtype=embeds.dtype)`: the
    factor is rounded to the model's dtype first (in bf16 sqrt(3072) is 55.5, not 55.43), and
    only the token embeddings are scaled, before positions, token types and dropout. The
    hidden size is the lookup's own last dimension, so the line needs nothing else from the tree.
    """

    construct = f"`words = {WORDS}(input_ids)` in Embedding.forward"

    func = "forward"
    cls: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.test) == SCALE):
            return body
        lookup = m.Assign(targets=[m.AssignTarget(target=m.Name())],
                          value=m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name("word_embeddings"))))
        at = next((i for i, s in enumerate(body) if m.matches(s, m.SimpleStatementLine(body=[lookup]))), None)
        if at is None:
            self.missing(f"no `x = {WORDS}(...)` statement in forward")
            return body
        self.anchored()
        words = body[at].body[0].targets[0].target.value
        new = statements(f"if {SCALE}:\n"
                         f"    # times sqrt(hidden), the factor rounded to the embeddings' dtype first (as HF's Gemma)\n"
                         f"    factor = torch.tensor({words}.size(-1) ** 0.5, dtype={words}.dtype)\n"
                         f"    {words} = {words} * factor")
        return body[: at + 1] + new + body[at + 1 :]
