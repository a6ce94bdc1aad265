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
from porter.edits.base import ModuleRewrite, Rewrite


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


class WidenGatedTest(Rewrite):
    """Turn the tree's own gated MLP on for a new choice of its option too.

    Why: a tree whose option takes a choice (`--activation-func-type swiglu`) builds its gated
    MLP (the second projection, or the doubled one) under `args.<dest> == 'swiglu'`; a gated
    activation porter adds to the same option needs that MLP as it is, with another function on
    the gate. Each such comparison in the method becomes `args.<dest> in ('swiglu', '<new>')`.
    """

    construct = "`args.<option> == '<the tree's gated choice>'` in ParallelMLP.__init__"

    func = "__init__"
    cls: str
    test: str  # the tree's test, e.g. "args.activation_func_type == 'swiglu'"
    widened: str  # e.g. "args.activation_func_type in ('swiglu', 'geglu_tanh')"

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: any(code(c) == self.widened for c in findall(s, m.Comparison()))):
            return body
        out = []
        for stmt in body:
            for node in findall(stmt, m.Comparison()):
                if code(node) == self.test:
                    self.anchored()
                    stmt = stmt.deep_replace(node, cst.parse_expression(self.widened))
            out.append(stmt)
        if not self._hits:
            self.missing(f"no `{self.test}` in the method")
        return out


class AddRegistryEntry(ModuleRewrite):
    """Add a choice to a tree's dict of gated functions (`GLU_ACTIVATIONS = {"swiglu": ..., ...}`).

    Why: where an option's choices are a dict's keys and the MLP looks its function up in the
    same dict (BigScience's `--glu-activation`), one entry is the new choice and its function:
    the tree's parser, its gated MLP and its width follow as for its own choices.
    """

    name: str  # the dict's module-level name
    key: str
    value: str  # the function's name, imported into the module

    def __post_init__(self) -> None:
        self.construct = f"a module-level `{self.name} = {{'<choice>': <function>, ...}}`"

    def scope(self) -> tuple:
        return ("assignment", self.name)

    def rewrite_module_body(self, body, path):
        for i, stmt in enumerate(body):
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for assign in findall(stmt, m.Assign(targets=[m.AssignTarget(target=m.Name(self.name))], value=m.Dict())):
                elements = list(assign.value.elements)
                keys = [e.key.evaluated_value for e in elements if isinstance(e.key, cst.SimpleString)]
                if self.key in keys:
                    return body
                quote = next((e.key.value[0] for e in elements if isinstance(e.key, cst.SimpleString)), "'")
                entry = cst.DictElement(cst.SimpleString(f"{quote}{self.key}{quote}"), cst.Name(self.value))
                if elements:  # the new entry goes last, laid out as the others (one a line, or not)
                    last = elements[-1]
                    separator = cst.SimpleWhitespace(" ")
                    if len(elements) > 1 and isinstance(elements[-2].comma, cst.Comma):
                        separator = elements[-2].comma.whitespace_after
                    entry = entry.with_changes(comma=last.comma)
                    elements[-1] = last.with_changes(comma=cst.Comma(whitespace_after=separator))
                elements.append(entry)
                body[i] = stmt.deep_replace(assign.value, assign.value.with_changes(elements=elements))
                return body
        raise self.fail(path, f"no module-level `{self.name} = {{...}}`")
