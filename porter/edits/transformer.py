"""Rewrites of megatron/model/transformer.py: bias, SwiGLU, norms, rotary attention."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    add_kwarg,
    code,
    dotted,
    expression,
    kwarg,
    mentions,
    statements,
    with_comment,
)
from porter.edits.base import Rewrite, none_safe_add, replace_each, unguarded_add


def _self_assign_calls(stmt: cst.CSTNode, attrs: set[str], callees: tuple[str, ...] = ()) -> list[tuple[str, cst.Call]]:
    """(attr, call) for every `self.attr = Call(...)` inside stmt, attr in attrs or the
    callee's name (its last dotted part) in callees."""
    found = []
    for assign in findall(stmt, m.Assign(value=m.Call())):
        if len(assign.targets) != 1:
            continue
        target = assign.targets[0].target
        if not (isinstance(target, cst.Attribute) and dotted(target.value) == "self"):
            continue
        callee = (dotted(assign.value.func) or "").rsplit(".", 1)[-1]
        if target.attr.value in attrs or callee in callees:
            found.append((target.attr.value, assign.value))
    return found


PARALLEL_LINEARS = ("ColumnParallelLinear", "RowParallelLinear")


class LinearBias(Rewrite):
    """Pass `bias=<expr>` to the tensor-parallel linear layers of a class.

    Why: LLaMA has no bias in any linear layer (Qwen2 keeps one on the QKV projection only).
    Megatron's ColumnParallelLinear and RowParallelLinear take `bias=`; with skip_bias_add they
    then return `(output, None)`, which the None-safe rewrites below let through. Every
    `self.<x> = ...ParallelLinear(...)` of the class's `__init__` is one, whatever the tree
    calls it, as well as the attributes named. `bias_expr` is one expression for all of them,
    or attribute -> expression (a site that keeps its bias); a linear not named gets the
    expression of the first attribute. A call that already passes `bias=` is the tree's (or
    porter's) own decision and is left alone, unless it is an earlier port's test that this
    site's expression widens (`not args.no_bias` -> `not args.no_bias or args.add_qkv_bias`).
    """

    construct = "`self.<linear> = ...ParallelLinear(...)` assignments"

    def __init__(self, cls: str, attrs: list[str], bias_expr: str | dict[str, str]) -> None:
        super().__init__()
        self.cls = cls
        self.func = "__init__"
        self.attrs = set(attrs)
        self.exprs = bias_expr if isinstance(bias_expr, dict) else dict.fromkeys(attrs, bias_expr)
        self.default = self.exprs[attrs[0]]

    def rewrite_body(self, body):
        def linears(stmt):
            return _self_assign_calls(stmt, self.attrs, PARALLEL_LINEARS)

        attr_of: dict[int, str] = {}

        def unbiased(stmt):
            for attr, call in linears(stmt):
                if kwarg(call, "bias") is None:
                    attr_of[id(call)] = attr
                    return call
            return None

        def biased(call):
            return add_kwarg(call, "bias", expression(self.exprs.get(attr_of[id(call)], self.default)))

        def narrower(stmt):
            """A linear whose `bias=` is an earlier port's narrower test this site widens with
            `or <its switch>` (mistral's `not args.no_bias`, then qwen2's QKV bias)."""
            for attr, call in linears(stmt):
                arg, want = kwarg(call, "bias"), self.exprs.get(attr, self.default)
                if arg is not None and want.startswith(code(arg.value) + " or "):
                    attr_of[id(call)] = attr
                    return call
            return None

        def widened(call):
            want = expression(self.exprs.get(attr_of[id(call)], self.default))
            return call.with_changes(args=[a.with_changes(value=want) if a.keyword is not None and a.keyword.value == "bias"
                                           else a for a in call.args])

        out = []
        for stmt in body:
            if any(kwarg(c, "bias") is not None for _, c in linears(stmt)):
                self.already_done()
            stmt, count = replace_each(stmt, unbiased, biased)
            stmt, wider = replace_each(stmt, narrower, widened)
            self._hits += count + wider
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing(f"none of self.{', self.'.join(sorted(self.attrs))} is assigned a call")
        return out


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

    def __init__(self, cls: str, attr: str, test: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = "__init__"
        self.attr = attr
        self.test = test

    def rewrite_body(self, body):
        if any("gate_and_up" in code(s) for s in body):
            self.already_done()
            return body
        out = []
        for stmt in body:
            calls = _self_assign_calls(stmt, {self.attr})
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

    def __init__(self, cls: str, test: str, func_name: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = "__init__"
        self.test = test
        self.func_name = func_name

    def rewrite_body(self, body):
        new = statements(f"if {self.test}:\n    self.activation_func = {self.func_name}")[0]
        if any(code(s) == code(new) for s in body):
            self.already_done()
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


class NoneSafeBiasAdd(Rewrite):
    """Make `x + bias` safe for a bias that is None, where a linear's bias is added by hand.

    Why: with skip_bias_add the MLP adds the first projection's bias itself
    (`activation_func(intermediate_parallel + bias_parallel)`); without bias that bias is
    None. The sum becomes `x if bias is None else x + bias`.
    """

    construct = "`out, bias = self.<linear>(...)` followed by `out + bias`"

    def __init__(self, cls: str, func: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = func

    def rewrite_body(self, body):
        bias_names = set()
        for stmt in body:
            for assign in findall(stmt, m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call())):
                elements = assign.targets[0].target.elements
                if len(elements) == 2 and isinstance(elements[1].value, cst.Name):
                    bias_names.add(elements[1].value.value)
        out = []
        for stmt in body:
            for name in bias_names:
                if findall(stmt, m.IfExp(test=m.Comparison(left=m.Name(name)))):
                    self.already_done()
                    continue
                stmt, count = replace_each(stmt, lambda s, name=name: unguarded_add(s, name), none_safe_add)
                self._hits += count
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing("no `x + bias` where bias comes from a linear layer")
        return out


class OptionalBiasParameter(Rewrite):
    """Let a bias-dropout-add helper take `bias=None`.

    Why: the TorchScript helpers are typed `(Tensor, Tensor, Tensor, float)`; without bias
    the layer passes None. The type comment's bias becomes `Optional[Tensor]` and the body's
    `x + bias` becomes `x if bias is None else x + bias` (TorchScript refines the Optional).
    TorchScript takes a parameter with no type at all for a Tensor, and one annotated
    `Tensor` is one: in a module that scripts functions, a helper whose bias is typed that
    way (or not typed) is refused rather than left to fail when it is called with None.
    """

    construct = "a `# type: (Tensor, Tensor, ...)` comment and a `bias` parameter"

    def __init__(self, func: str, param: str = "bias") -> None:
        super().__init__()
        self.func = func
        self.param = param

    def apply(self, module, path):
        self._scripted = any(
            "jit.script" in code(d.decorator)
            for stmt in module.body if isinstance(stmt, cst.FunctionDef) for d in stmt.decorators
        )
        return super().apply(module, path)

    def _retype(self, comment: str, index: int) -> tuple[str | None, bool]:
        """(the comment with the bias typed Optional, or None; whether it already was)."""
        head, _, tail = comment.partition("(")
        types, _, rest = tail.partition(")")
        parts = [t.strip() for t in types.split(",")]
        if index < len(parts) and parts[index] == "Tensor":
            parts[index] = "Optional[Tensor]"
            return f"{head}({', '.join(parts)}){rest}", False
        return None, index < len(parts) and parts[index] == "Optional[Tensor]"

    def leave_FunctionDef(self, original, updated):
        if self._class_stack or updated.name.value != self.func:
            return super().leave_FunctionDef(original, updated)
        self._functions_seen.append(self.func)
        params = [p.name.value for p in updated.params.params]
        if self.param not in params or not updated.body.body:
            self.missing(f"{self.func} has no parameter {self.param!r}")
            return updated
        index = params.index(self.param)
        annotation = updated.params.params[index].annotation
        if annotation is not None and "Optional" not in code(annotation.annotation):
            self.missing(f"{self.param} is annotated `{code(annotation.annotation)}`: porter retypes `# type:` "
                         "comments, not annotations")
            return updated
        # TorchScript reads the function's first `# type:` comment, wherever it is: on the
        # def line, above the first statement, or after a docstring.
        header = updated.body.header
        body = list(updated.body.body)
        typed = changed = False

        def is_type(comment) -> bool:
            return comment is not None and comment.value.startswith("# type:") and "ignore" not in comment.value

        def retype(comment):
            nonlocal changed
            new, done = self._retype(comment.value, index)
            if new is not None:
                changed = True
                return cst.Comment(new)
            if done:
                self.already_done()
            return comment

        if is_type(header.comment):
            typed = True
            header = header.with_changes(comment=retype(header.comment))
        for pos, stmt in enumerate(body):
            if typed:
                break
            lines = list(stmt.leading_lines)
            for i, line in enumerate(lines):
                if is_type(line.comment):
                    typed = True
                    lines[i] = line.with_changes(comment=retype(line.comment))
                    body[pos] = stmt.with_changes(leading_lines=lines)
                    break
        if self._scripted and not typed and annotation is None:
            self.missing(f"{self.func} gives {self.param} no type in a module that uses TorchScript, which then "
                         "takes it for a Tensor that cannot be None")
            return updated
        for pos, stmt in enumerate(body):
            stmt, count = replace_each(stmt, lambda s: unguarded_add(s, self.param), none_safe_add)
            changed = changed or count > 0
            body[pos] = stmt
        if changed:
            self.anchored()
        elif not self._done:
            # Nothing to change: a helper that only forwards its bias is fine as it is.
            self.already_done()
        return updated.with_changes(body=updated.body.with_changes(body=body, header=header))


class NoneSafeExpandAs(Rewrite):
    """Guard `bias.expand_as(residual)` in the layer forward against a None bias.

    Why: the layer broadcasts each sub-block's bias before the fused bias-dropout-add;
    without bias those are None. `b.expand_as(r)` becomes `b.expand_as(r) if b is not None
    else None`.
    """

    construct = "`<bias>.expand_as(<residual>)` calls"

    def __init__(self, cls: str, func: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = func

    def rewrite_body(self, body):
        expand = m.Call(func=m.Attribute(value=m.Name(), attr=m.Name("expand_as")))

        def unguarded(stmt):
            guarded = {id(e.body) for e in findall(stmt, m.IfExp())}
            return next((c for c in findall(stmt, expand) if id(c) not in guarded), None)

        out = []
        for stmt in body:
            if any(m.matches(e.body, expand) for e in findall(stmt, m.IfExp())):
                self.already_done()
            stmt, count = replace_each(
                stmt,
                unguarded,
                lambda call: expression(f"X if {call.func.value.value} is not None else None").with_changes(body=call),
            )
            self._hits += count
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing("no `bias.expand_as(residual)` call in the function")
        return out


class ChooseNormClass(Rewrite):
    """Pick the norm class by argument at every norm site of a class's `__init__`.

    Why: LLaMA normalises with RMSNorm where GPT uses LayerNorm: before attention, before
    the MLP, and after the last layer. A local `norm_class = RMSNorm if ... else LayerNorm`
    is set after `args = get_args()` and every `self.<x> = LayerNorm(...)` calls it instead,
    with the same arguments (both take the hidden size and `eps=`). A site that passes a
    keyword RMSNorm does not take (`accepts`) is refused rather than left to fail when built.
    """

    construct = "`args = get_args()` and `self.<x> = LayerNorm(...)` norm sites"

    def __init__(self, cls: str, test: str, norm: str = "RMSNorm", base: str = "LayerNorm",
                 accepts: tuple[str, ...] = ("hidden_size", "eps")) -> None:
        super().__init__()
        self.cls = cls
        self.func = "__init__"
        self.test = test
        self.norm = norm
        self.base = base
        self.accepts = accepts

    def rewrite_body(self, body):
        choice = statements(f"norm_class = {self.norm} if {self.test} else {self.base}")[0]
        if any(code(s) == code(choice) for s in body):
            self.already_done()
            return body
        sites = m.Assign(value=m.Call(func=m.Name(self.base)))
        if not any(findall(s, sites) for s in body):
            self.missing(f"no `self.<x> = {self.base}(...)` in __init__")
            return body
        calls = [c for s in body for c in findall(s, m.Call(func=m.Name(self.base)))]
        foreign = sorted({a.keyword.value for c in calls for a in c.args
                          if a.keyword is not None and a.keyword.value not in self.accepts})
        if foreign:
            self.missing(f"a {self.base}(...) site passes {', '.join(foreign)}=, which {self.norm} does not take")
            return body
        out = []
        for stmt in body:
            stmt, _ = replace_each(
                stmt,
                lambda s: next(iter(findall(s, m.Call(func=m.Name(self.base)))), None),
                lambda call: call.with_changes(func=cst.Name("norm_class")),
            )
            out.append(stmt)
        args_at = next(
            (i for i, s in enumerate(out) if m.matches(s, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("args"))])]))),
            None,
        )
        if args_at is None:
            out = statements("args = get_args()") + out
            args_at = 0
        # A function that imports the norm classes itself: choose after that import.
        local = [i for i, s in enumerate(out) if {self.base, self.norm} & set(_imported_names(s))]
        at = max([args_at, *local])
        self.anchored()
        return out[: at + 1] + [choice] + out[at + 1 :]


def _imported_names(stmt: cst.CSTNode) -> list[str]:
    """Names a top-level statement of a function body imports (`from x import A as B` -> B)."""
    if not isinstance(stmt, cst.SimpleStatementLine):
        return []
    names = []
    for small in stmt.body:
        if isinstance(small, (cst.Import, cst.ImportFrom)) and not isinstance(small.names, cst.ImportStar):
            names += [code(a.asname.name if a.asname else a.name).split(".")[0] for a in small.names]
    return names


class AddRotaryEmbedding(Rewrite):
    """Create the rotary embedding in attention's `__init__` when the argument asks for it.

    Why: rotary replaces learned positions with a rotation of query and key by position.
    Its cos/sin cache is per attention head dimension, so it lives with attention.
    """

    construct = "ParallelAttention.__init__ with `self.hidden_size_per_attention_head`"

    def __init__(self, cls: str, test: str, head_dim: str, theta: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = "__init__"
        self.test = test
        self.head_dim = head_dim
        self.theta = theta

    def rewrite_body(self, body):
        if any(mentions(s, "self.rotary_emb") for s in body):
            self.already_done()
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

    def __init__(self, cls: str, func: str, query: str = "query_layer", key: str = "key_layer",
                 past: str | None = "layer_past") -> None:
        super().__init__()
        self.cls = cls
        self.func = func
        self.query = query
        self.key = key
        self.past = past

    def rewrite_body(self, body):
        if any(mentions(s, "self.rotary_emb") for s in body):
            self.already_done()
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


class AddKeyword(Rewrite):
    """Pass one more keyword argument to every call of a class or function inside a method.

    Why: a difference that refines another one's object (rope scaling refines the rotary
    embedding) says so where that object is built, as a keyword the builder takes
    (`RotaryEmbedding(..., scaling=rope_scaling_of(args))`), leaving the rest of the call as it is.
    """

    construct = "a call of the named class in the method"

    def __init__(self, cls: str, func: str, callee: str, keyword: str, value: str) -> None:
        super().__init__()
        self.cls = cls
        self.func = func
        self.callee = callee
        self.keyword = keyword
        self.value = value

    def rewrite_body(self, body):
        def plain(stmt):
            for call in findall(stmt, m.Call()):
                if (dotted(call.func) or "").rsplit(".", 1)[-1] == self.callee and kwarg(call, self.keyword) is None:
                    return call
            return None

        found = any((dotted(c.func) or "").rsplit(".", 1)[-1] == self.callee for s in body for c in findall(s, m.Call()))
        if not found:
            self.missing(f"no call of {self.callee}")
            return body
        out = []
        for stmt in body:
            stmt, count = replace_each(stmt, plain, lambda call: add_kwarg(call, self.keyword, expression(self.value)))
            self._hits += count
            out.append(stmt)
        if not self._hits:
            self.already_done()
        return out
