"""Rewrites of the tree's own GPT model for soft-capped logits (Gemma-2), where the tree's GPT
classes carry the port (the "flags" port: porter's model template, with its `logits` slot, is
not used there).

Two small edits in megatron/model/gpt_model.py: the plain model's logits are capped right where
its post-processing computes them (`output = parallel_lm_logits(...)`), before the loss and
before they are handed back without labels; the pipeline model appends the cap as a layer of its
own right after its output head (the tied embedding's `forward_fn`, or the untied head), as it
appends its other plain functions (float16_to_fp32). The cap lives in
megatron/model/logit_softcap.py (logit_softcap.py.j2 here).
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import mentions, statements, with_comment
from porter.edits.base import Rewrite

CAP = "softcap_logits"
LOGITS = "parallel_lm_logits"


def _logits_at(body) -> tuple[int, str] | None:
    """(index, name) of `name = parallel_lm_logits(...)` among the statements, or None."""
    for i, stmt in enumerate(body):
        if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
            small = stmt.body[0]
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name) \
                    and isinstance(small.value, cst.Call) and isinstance(small.value.func, cst.Name) \
                    and small.value.func.value == LOGITS:
                return i, small.targets[0].target.value
    return None


class CapPlainLogits(Rewrite):
    """Cap the plain model's logits where its post-processing computes them.

    Why: HF's Gemma-2 takes cap * tanh(logits / cap) of the output projection's logits before the
    cross entropy (and hands the capped logits back when there are no labels). The tree's
    `post_language_model_processing` computes `output = parallel_lm_logits(...)` (this rank's
    vocabulary slice; the cap is per element) and then either returns it or takes the loss of
    it: the cap goes right after, so both see it. A branch of the function that returns without
    computing the logits (a chunked loss of the hidden states) cannot cap them: it refuses a set
    cap at run time rather than leave it out.
    """

    construct = "`<logits> = parallel_lm_logits(...)` in the function (or in a branch of an if/else in it)"

    func: str
    switch: str  # the cap's argument, e.g. final_logit_softcap

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: mentions(s, CAP)) or any(findall(s, m.Call(func=m.Name(CAP))) for s in body):
            self.already_done()
            return body
        capped = self._capped(list(body))
        if capped is None:
            self.missing(f"no `<logits> = {LOGITS}(...)`")
            return body
        self.anchored()
        return capped

    def _capped(self, body):
        found = _logits_at(body)
        if found is not None:
            at, name = found
            new = with_comment(statements(f"{name} = {CAP}({name})")[0],
                               "Soft-capped logits (Gemma-2): cap * tanh(logits / cap), before the loss; unset: none.")
            return [*body[:at + 1], new, *body[at + 1:]]
        for i, stmt in enumerate(body):
            if not isinstance(stmt, cst.If) or not isinstance(stmt.body, cst.IndentedBlock):
                continue
            inner = self._capped(list(stmt.body.body))
            if inner is not None:
                orelse = stmt.orelse
                if isinstance(orelse, cst.Else):
                    orelse = orelse.with_changes(body=orelse.body.with_changes(body=self._refused(list(orelse.body.body))))
                return [*body[:i], stmt.with_changes(body=stmt.body.with_changes(body=inner), orelse=orelse), *body[i + 1:]]
            if isinstance(stmt.orelse, cst.Else):
                inner = self._capped(list(stmt.orelse.body.body))
                if inner is not None:
                    refused = self._refused(list(stmt.body.body))
                    orelse = stmt.orelse.with_changes(body=stmt.orelse.body.with_changes(body=inner))
                    return [*body[:i], stmt.with_changes(body=stmt.body.with_changes(body=refused), orelse=orelse),
                            *body[i + 1:]]
        return None

    def _refused(self, branch):
        """The other branch, where it returns without the logits: a set cap stops it."""
        if not findall(cst.IndentedBlock(body=branch), m.Return()):
            return branch
        option = "--" + self.switch.replace("_", "-")
        new = statements(f"assert get_args().{self.switch} is None, '{option}: this path takes the loss without the logits'")[0]
        new = with_comment(new, "Soft-capped logits (Gemma-2): this path never holds the logits to cap.")
        return [new, *branch]


class CapPipeLogits(Rewrite):
    """The pipeline model appends the cap as a layer right after its output head.

    Why: the pipe's last stage computes the logits in its head layer (the tied embedding's
    `forward_fn`, a function of `__init__` calling parallel_lm_logits, or the untied head beside
    it under the same if/else) and hands them to its loss; HF caps them in between, in the
    model's dtype. The tree appends plain functions as layers (its fp32 conversion); the cap is
    one more, when set, so the layers before it keep their numbers (and their checkpoint files).
    """

    construct = "a function of __init__ calling parallel_lm_logits, and the statement that appends the head using it"

    func = "__init__"
    cls: str
    switch: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: mentions(s, CAP)):
            return body
        helper = next((s.name.value for s in body if isinstance(s, cst.FunctionDef)
                       and findall(s, m.Call(func=m.Name(LOGITS)))), None)
        if helper is None:
            self.missing(f"no function of __init__ calling {LOGITS}(...)")
            return body
        at = next((i for i, s in enumerate(body) if not isinstance(s, cst.FunctionDef) and mentions(s, helper)), None)
        if at is None:
            self.missing(f"{helper} is not handed to a layer")
            return body
        self.anchored()
        new = statements(f"if get_args().{self.switch} is not None:\n    self.specs.append({CAP})\n")[0]
        new = with_comment(new, "Soft-capped logits (Gemma-2): cap * tanh(logits / cap) after the head, before the loss.")
        return [*body[:at + 1], new, *body[at + 1:]]
