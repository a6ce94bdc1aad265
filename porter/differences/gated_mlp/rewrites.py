"""Rewrites of the tree's MLP for a gated activation: one fused gate+up projection, and the activation chosen by switch."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    add_kwarg,
    code,
    dotted,
    self_assign_calls,
    statements,
    with_comment,
)
from porter.edits.base import Rewrite


class FusedGateUp(Rewrite):
    """Widen the MLP's first projection into one fused gate+up projection for a gated MLP.

    Why: SwiGLU needs silu(x W_gate) * (x W_up), GeGLU gelu(x W_gate) * (x W_up). One
    ColumnParallelLinear twice ffn wide does both in one GEMM; `test` is true for every gated
    activation the tree's switch offers, so one tree serves both. With `stride=2` each
    tensor-parallel rank holds [gate_r; up_r], so on every rank the FIRST half of the local
    output is the gate and the second half the up projection (the full master weight is
    [W_gate; W_up], HF's gate_proj then up_proj).
    """

    construct = "`self.dense_h_to_4h = ColumnParallelLinear(hidden, ffn, ...)`"

    func = "__init__"
    cls: str
    attr: str
    test: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: "gate_and_up" in code(s)):
            return body
        out = []
        for stmt in body:
            calls = self_assign_calls(stmt, {self.attr})
            if calls and len(calls[0][1].args) >= 2 and calls[0][1].args[1].keyword is None:
                self.anchored()
                call = calls[0][1]
                args = list(call.args)
                width = args[1].value
                args[1] = args[1].with_changes(
                    value=cst.BinaryOperation(
                        left=cst.Name("gate_and_up"),
                        operator=cst.Multiply(),
                        right=width,
                    )
                )
                new_call = add_kwarg(call.with_changes(args=args), "stride", cst.Name("gate_and_up"))
                gate = statements(f"gate_and_up = 2 if {self.test} else 1")[0]
                gate = with_comment(with_comment(gate, "Gated MLP: one fused gate+up projection, 2*ffn wide. On each tensor-parallel"),
                                    "rank the first half of its output is the gate, the second half the up projection.")
                out.append(gate)
                stmt = stmt.deep_replace(call, new_call)
            out.append(stmt)
        if not self._hits:
            self.missing(f"no `self.{self.attr} = Linear(in, out, ...)` with a positional width")
        return out


class SetActivation(Rewrite):
    """Choose the activation function by argument, after the tree's own choice.

    Why: Megatron picks `self.activation_func` (gelu, then the openai/onnx overrides); the
    new choice goes right after those so it wins when its argument asks for it. The argument
    checks refuse combining it with --openai-gelu / --onnx-safe.
    """

    construct = "the statements that assign `self.activation_func`"

    func = "__init__"
    cls: str
    test: str
    func_name: str

    def rewrite_body(self, body):
        new = statements(f"if {self.test}:\n    self.activation_func = {self.func_name}")[0]
        if self.recognised(body, lambda s: code(s) == code(new)):
            return body
        last = None
        for i, stmt in enumerate(body):
            if any(dotted(a.targets[0].target) == "self.activation_func" for a in findall(stmt, m.Assign())):
                last = i
        if last is None:
            self.missing("no assignment to self.activation_func")
            return body
        self.anchored()
        return body[: last + 1] + [new] + body[last + 1 :]
