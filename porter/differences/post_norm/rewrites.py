"""Rewrites of the tree's ParallelTransformerLayer for post-norm placement (OLMo-2).

GPT normalises before attention and before the MLP: x + attn(norm(x)), then x + mlp(norm(x)).
OLMo-2 normalises their outputs instead: x + norm(attn(x)), then x + norm(mlp(x)). Two small
edits keep the tree's forward as it is: `__init__` builds the two output norms the way the
tree builds its own norm after attention (its class, its arguments), and makes the two input
norms identities; `forward` normalises each output (its bias added) before the residual add.
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, dotted, mentions, statements, with_comment
from porter.edits.base import Rewrite, indent_continuations

ATTENTION_NORM = "self.attention_output_layernorm"
MLP_NORM = "self.mlp_output_layernorm"


class _Retarget(cst.CSTTransformer):
    """`self.<old> = ...` -> `self.<new> = ...` (assignment targets only)."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__()
        self.old, self.new = old, new

    def leave_AssignTarget(self, original, updated):
        if dotted(updated.target) == self.old:
            return updated.with_changes(target=cst.parse_expression(self.new))
        return updated


class OutputNorms(Rewrite):
    """Build the attention's and the MLP's output norms, and drop the input norms, under the switch.

    Why: post-norm normalises what attention and the MLP return, before each residual add,
    and nothing before them. The new norms are built by the tree's own statement for its norm
    after attention (`self.post_attention_layernorm = ...`, whatever class and arguments the
    tree uses: LayerNorm, RMSNorm, a switch between them), retargeted; the norms before
    attention and before the MLP become `torch.nn.Identity()`, so the tree's forward passes
    the hidden states through them unchanged and no unused weight is saved or trained.
    """

    construct = "`self.input_layernorm = ...` then `self.post_attention_layernorm = ...` in __init__"

    func = "__init__"
    cls: str
    test: str
    input_norm: str = "self.input_layernorm"
    post_attention_norm: str = "self.post_attention_layernorm"

    def rewrite_body(self, body):
        if self.recognised(body, ATTENTION_NORM):
            return body
        builds = [i for i, s in enumerate(body) if self.post_attention_norm in assigned_names(s)]
        inputs = [i for i, s in enumerate(body) if self.input_norm in assigned_names(s)]
        if not builds or not inputs:
            self.missing(f"no {self.post_attention_norm if not builds else self.input_norm} = ... in __init__")
            return body
        if inputs[-1] > builds[-1]:
            self.missing(f"{self.input_norm} is built after {self.post_attention_norm}")
            return body
        self.anchored()
        build = body[builds[-1]].with_changes(leading_lines=[])
        norms = [indent_continuations(build.visit(_Retarget(self.post_attention_norm, name)))
                 for name in (ATTENTION_NORM, MLP_NORM)]
        new = statements(
            f"""
            {ATTENTION_NORM} = {MLP_NORM} = None
            if {self.test}:
                {self.input_norm} = torch.nn.Identity()
                {self.post_attention_norm} = torch.nn.Identity()
            """
        )
        block = new[1]
        block = block.with_changes(body=block.body.with_changes(body=[*norms, *block.body.body]))
        first = with_comment(new[0], "Post-norm (OLMo-2): the outputs of attention and of the MLP are normalised "
                                     "before each residual add,")
        first = with_comment(first, "by norms built as the one after attention; nothing is normalised before them.")
        at = builds[-1] + 1
        return [*body[:at], first, block, *body[at:]]


class NormalizeOutput(Rewrite):
    """Normalise a sublayer's output, its bias added, before the residual add.

    Why: post-norm's x + norm(f(x)). The output of `self.<sublayer>(...)` (and the bias the tree
    returns apart, for its fused bias-dropout-add) is normalised just before the first statement
    after the call that reads the bias, which is where the tree adds the residual; the bias is
    then zero (kept a tensor for trees that add it without a None check).
    """

    construct = "`<output>, <bias> = self.<sublayer>(...)` in forward, and a later statement reading <bias>"

    func = "forward"
    cls: str
    sublayer: str  # "self.attention", "self.mlp"
    norm: str  # the output norm, e.g. self.attention_output_layernorm
    what: str  # for the comment: "attention", "MLP"

    def rewrite_body(self, body):
        if self.recognised(body, self.norm):
            return body
        call = m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call())
        found = None
        for i, stmt in enumerate(body):
            for assign in findall(stmt, call):
                if dotted(assign.value.func) == self.sublayer and len(assign.targets[0].target.elements) >= 2:
                    found = (i, [code(e.value) for e in assign.targets[0].target.elements[:2]])
                    break
            if found:
                break
        if found is None:
            self.missing(f"no `output, bias = {self.sublayer}(...)`")
            return body
        at, (output, bias) = found
        added = next((j for j in range(at + 1, len(body)) if mentions(body[j], bias)), None)
        if added is None:
            self.missing(f"nothing reads {bias} after {self.sublayer}(...)")
            return body
        self.anchored()
        new = statements(
            f"""
            if {self.norm} is not None:
                {output} = {self.norm}({output} if {bias} is None else {output} + {bias})
                {bias} = None if {bias} is None else torch.zeros_like({bias})
            """
        )[0]
        new = with_comment(new, f"Post-norm: the {self.what}'s output (its bias added) is normalised before the "
                                "residual add.")
        first = body[added]
        lines = list(first.leading_lines)
        blank = 0  # blank lines above the anchor go above the new block; its comments stay with it
        while blank < len(lines) and lines[blank].comment is None:
            blank += 1
        new = new.with_changes(leading_lines=[*lines[:blank], *new.leading_lines])
        return [*body[:added], new, first.with_changes(leading_lines=lines[blank:]), *body[added + 1:]]
