"""Rewrite of the tree's core attention: one fused kernel where it computes the same thing.

Megatron's attention is unfused: baddbmm for the scores, a masked softmax, dropout, bmm for
the context, with every [b, np, sq, sk] intermediate in memory. LLaMA trains without
attention dropout, which lets `torch.nn.functional.scaled_dot_product_attention` (Gaudi's
FusedSDPA on HPU) compute the same function in one kernel: on CPU it halves the step time
of the attention. See fused_attention.py.j2 here for when it applies and why it is exact.
"""

from __future__ import annotations

import libcst as cst

from porter.cst.nodes import mentions, statements
from porter.edits.base import Rewrite, indent_continuations
from porter.profile.attention import FUSED_MARK, core_span


class FusedCoreAttention(Rewrite):
    """Put the tree's core attention in the `else:` of a branch that calls the fused kernel.

    Why: the fused path must fall back to the tree's own code, untouched, whenever it would
    not compute the same thing (attention dropout active, a half-precision softmax asked
    for, the inference path with a key/value cache); so the core (from the first statement
    after query, key and value are final to the last one that binds `context_layer`, see
    porter.profile.attention) moves one block deeper, unchanged, and the fused call binds
    `context_layer` [sq, b, hp] in its place.
    """

    construct = "the core attention: torch.baddbmm scores ... the last `context_layer = ...`"

    cls: str
    func: str
    softmax: str
    dropout: str
    alpha: str
    cache_test: str | None

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and mentions(s.test, FUSED_MARK)):
            return body
        span = core_span(body)
        if span is None:
            self.missing("no core attention porter can fuse (torch.baddbmm scores ... `context_layer = ...`)")
            return body
        self.anchored()
        applies = f"{FUSED_MARK}(query_layer, self.{self.softmax}, self.{self.dropout})"
        test = f"({self.cache_test}\n        and {applies})" if self.cache_test else applies
        branch = statements(
            f"if {test}:\n"
            "    # [sq, b, np, hn] -> [sq, b, hp]\n"
            "    context_layer = fused_attention(query_layer, key_layer, value_layer, attention_mask,\n"
            f"                                    alpha={self.alpha}, softmax=self.{self.softmax})\n"
            "else:\n"
            "    pass\n"
        )[0]
        core = [indent_continuations(s) for s in body[span.start : span.end + 1]]
        # The core's leading blank lines go before the branch; its comments stay with it.
        first = core[0]
        leading = list(first.leading_lines)
        blank = 0
        while blank < len(leading) and leading[blank].comment is None:
            blank += 1
        core[0] = first.with_changes(leading_lines=leading[blank:])
        comment = [
            cst.EmptyLine(comment=cst.Comment("# Fused attention where it computes what the code below computes; see fused_attention.py.")),
        ]
        branch = branch.with_changes(
            leading_lines=[*leading[:blank], *comment],
            orelse=branch.orelse.with_changes(body=branch.orelse.body.with_changes(body=core)),
        )
        return [*body[: span.start], branch, *body[span.end + 1 :]]
