"""Rewrites of the tree's core attention for soft-capped scores (Gemma-2).

Two small edits: the attention keeps the cap its switch gives (`__init__`), and its forward
caps the scores right before the tree's masked softmax; where porter fused the attention, the
fused branch's test gains `self.attention_softcap is None and`, so that with a cap the tree's
own unfused attention runs (torch's fused kernel takes no function of the scores). The cap
function lives in megatron/model/softcap.py (softcap.py.j2 here).
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import expression, insert_before, mentions, statements, with_comment
from porter.edits.base import Rewrite
from porter.profile.attention import FUSED_MARK

CAP = "self.attention_softcap"


class SoftcapAttribute(Rewrite):
    """Keep the cap on the attention module: `self.attention_softcap = args.attention_softcap`.

    Why: the cap is a switch of the tree's arguments; reading it once in `__init__` is how the
    tree's attention keeps its other settings (dropout, softmax scaling).
    """

    construct = "the core attention class's __init__"

    func = "__init__"
    cls: str
    value: str

    def rewrite_body(self, body):
        if self.recognised(body, CAP):
            return body
        self.anchored()
        new = statements(f"{CAP} = {self.value}")[0]
        return [*body, with_comment(new, "Soft-capped attention scores (Gemma-2): cap * tanh(scores / cap); None: none.")]


class SoftcapScores(Rewrite):
    """Cap the scores right before the masked softmax; keep porter's fused kernel out while capped.

    Why: Gemma-2 computes cap * tanh(scale * q k^T / cap) and only then masks and normalises.
    Megatron's scores reach `self.<softmax>(scores, mask)` scaled by alpha, and the softmax
    multiplies them by its own scale first: `softcap_scores` caps them as that scale leaves
    them, so the probabilities are Gemma-2's with or without apply_query_key_layer_scaling.
    torch's scaled_dot_product_attention has no hook for a function of the scores, so where
    porter put the core attention behind `if ... fused_attention_applies(...)`, that test
    gains `self.attention_softcap is None and`, and the cap goes into the tree's own code (the
    `else:`); the inference path with a key/value cache runs that code too.
    """

    construct = "`<probs> = self.<softmax>(<scores>, <mask>)` in the core attention (or in the else of porter's fused branch)"

    cls: str
    func: str
    softmax: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: mentions(s, "softcap_scores")):
            return body
        fused = next((i for i, s in enumerate(body) if isinstance(s, cst.If) and mentions(s.test, FUSED_MARK)), None)
        if fused is None:
            capped = self._capped(body)
            if capped is not None:
                self.anchored()
            return body if capped is None else capped
        branch = body[fused]
        if not isinstance(branch.orelse, cst.Else) or not isinstance(branch.orelse.body, cst.IndentedBlock):
            self.missing("porter's fused branch has no `else:` holding the tree's attention")
            return body
        capped = self._capped(list(branch.orelse.body.body))
        if capped is None:
            return body
        self.anchored()
        test = branch.test if branch.test.lpar else branch.test.with_changes(lpar=[cst.LeftParen()],
                                                                            rpar=[cst.RightParen()])
        branch = branch.with_changes(
            test=expression(f"{CAP} is None and X").with_changes(right=test),
            orelse=branch.orelse.with_changes(body=branch.orelse.body.with_changes(body=capped)))
        return [*body[:fused], branch, *body[fused + 1:]]

    def _capped(self, body):
        """The statements with the cap before the softmax call, or None (missing says why)."""
        call = m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(self.softmax)))
        at = next((i for i, s in enumerate(body) if findall(s, call)), None)
        if at is None:
            self.missing(f"no call of self.{self.softmax}(scores, mask)")
            return None
        scores = findall(body[at], call)[0].args[0].value if findall(body[at], call)[0].args else None
        if not isinstance(scores, cst.Name):
            self.missing(f"self.{self.softmax}(...) is not given the scores by name")
            return None
        name = scores.value
        new = statements(f"{name} = softcap_scores({name}, {CAP}, self.{self.softmax})")[0]
        new = with_comment(new, "Soft-capped scores (Gemma-2): cap * tanh(scores / cap), before the mask and softmax.")
        return insert_before(body, at, [new])

