"""Rewrites of the tree's transformer for biases per site: switch them off, and keep a None bias safe."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    add_kwarg,
    code,
    expression,
    kwarg,
    self_assign_calls,
    statements,
)
from porter.edits.base import Rewrite, is_docstring, none_safe_add, replace_each, unguarded_add

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

    func = "__init__"
    cls: str
    attrs: list[str]
    bias_expr: str | dict[str, str]

    def __post_init__(self) -> None:
        self.exprs = self.bias_expr if isinstance(self.bias_expr, dict) else dict.fromkeys(self.attrs, self.bias_expr)
        self.default = self.exprs[self.attrs[0]]
        self.attrs = set(self.attrs)

    def rewrite_body(self, body):
        def linears(stmt):
            return self_assign_calls(stmt, self.attrs, PARALLEL_LINEARS)

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


class NoneSafeBiasAdd(Rewrite):
    """Make `x + bias` safe for a bias that is None, where a linear's bias is added by hand.

    Why: with skip_bias_add the MLP adds the first projection's bias itself
    (`activation_func(intermediate_parallel + bias_parallel)`); without bias that bias is
    None. The sum becomes `x if bias is None else x + bias`.
    """

    construct = "`out, bias = self.<linear>(...)` followed by `out + bias`"

    cls: str
    func: str

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

    func: str
    param: str = "bias"

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

    cls: str
    func: str

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


class KeepSiteBias(Rewrite):
    """OR one site's bias switch into the `bias=` its linears already pass the tree's way.

    Why: a tree that implements the no-bias switch itself (Megatron-LM's
    `--disable-bias-linear`, `bias=args.add_bias_linear` on every linear) has one flag for all
    of them; Qwen2 keeps a bias on the QKV projection only. The tree's switch stays in charge
    of every other linear; the kept site's become `bias=<the tree's expression> or <the
    site's switch>` (`bias=args.add_bias_linear or args.add_qkv_bias`), whatever the tree
    wrote there (`args.`, `config.`, `self.add_bias`).

    A linear built with `skip_bias_add=` hands its bias back to the caller, which may add it
    only under the tree's one flag: such a linear is refused unless `returned_ok` (the plan
    found the tree's bias path adds whatever bias comes back, None or not). A kept linear that
    passes no `bias=` keeps the linear's default (a bias) and is left alone.
    """

    construct = "`self.<linear> = ...ParallelLinear(..., bias=<expr>)` assignments"

    func = "__init__"
    cls: str
    attrs: list[str]
    switch: str  # the site's test, e.g. `args.add_qkv_bias`
    returned_ok: bool = False

    def __post_init__(self) -> None:
        self.attrs = set(self.attrs)
        self.wanted = expression(self.switch)

    def _widened(self, value: cst.BaseExpression) -> bool:
        return m.matches(value, m.BooleanOperation(operator=m.Or())) and value.right.deep_equals(self.wanted)

    def rewrite_body(self, body):
        def linears(stmt):
            return self_assign_calls(stmt, self.attrs)

        refused: list[str] = []

        def narrow(stmt):
            for attr, call in linears(stmt):
                arg = kwarg(call, "bias")
                if arg is None or self._widened(arg.value):
                    continue
                skip = kwarg(call, "skip_bias_add")
                if skip is not None and code(skip.value) != "False" and not self.returned_ok:
                    refused.append(attr)
                    continue
                return call
            return None

        def widen(call):
            arg = kwarg(call, "bias")
            value = arg.value
            if isinstance(value, (cst.IfExp, cst.Lambda)) and not value.lpar:  # they bind looser than `or`
                value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
            new = cst.BooleanOperation(left=value, operator=cst.Or(), right=self.wanted)
            return call.with_changes(args=[a.with_changes(value=new) if a is arg else a for a in call.args])

        out = []
        for stmt in body:
            for _, call in linears(stmt):
                arg = kwarg(call, "bias")
                if arg is not None and self._widened(arg.value):
                    self.already_done()
            stmt, count = replace_each(stmt, narrow, widen)
            self._hits += count
            out.append(stmt)
        if refused:
            self._hits = self._done = 0
            names = ", self.".join(dict.fromkeys(refused))
            self.missing(f"self.{names} returns its bias to the caller (skip_bias_add), which the tree adds "
                         "under its own one bias flag")
        elif not self._hits and not self._done and not any(linears(s) for s in body):
            self.missing(f"none of self.{', self.'.join(sorted(self.attrs))} is assigned a call")
        elif not self._hits and not self._done:
            self.already_done()  # the kept linears pass no `bias=`: they keep the linear's default, a bias
        return out


class RefuseSiteBias(Rewrite):
    """Stop a function that decides a bias by the tree's one flag when a site's own switch is on.

    Why: a function outside the model's classes that builds its own linears (microsoft's FPDT
    attention makes its QKV weight and bias as bare parameters, the bias under
    `if args.add_bias_linear:`) never sees the site's switch: with it on, that path would build
    the model without the site's bias and train it silently. The function's first statement
    becomes `assert not <switch>, "<message>"`, so that path says so instead.
    """

    construct = "a top-level function that tests the tree's bias flag"

    func: str
    switch: str  # the site's test, e.g. `args.add_qkv_bias`
    message: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda stmt: code(stmt).startswith(f"assert not {self.switch},")):
            return body
        at = 1 if body and is_docstring(body[0]) else 0
        self.anchored()
        return [*body[:at], *statements(f"assert not {self.switch}, {self.message!r}"), *body[at:]]
