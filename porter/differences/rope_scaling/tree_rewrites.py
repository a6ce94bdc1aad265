"""Rewrites that give the tree's own rotary embedding frequency scaling (tree_scaling.py finds the
shape): its class holds the scaled frequencies, its forward takes those of the sequence's length,
and its apply function scales cos and sin by the attention factor. The helpers they call are in
the module porter adds (rope_scaling.py.j2)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, expression, mentions, statements, uses_values
from porter.edits.base import Rewrite

SCALED = "rope_scaled"  # the attribute holding the scaled frequencies
LOCAL = "rope_inv_freq"  # forward's name for the frequencies of the sequence's length
SCALE = "attention_scaling"  # the helper giving the factor on cos and sin
TAG = "tag_angles"  # the helper tagging the angles a forward returns with its factor


def _params(func: cst.FunctionDef) -> list[cst.Param]:
    return [p for p in (*func.params.params, *func.params.kwonly_params) if p.name.value != "self"]


class ScaledRotaryInit(Rewrite):
    """RotaryEmbedding.__init__ takes `scaling=None` and keeps the scaled frequencies beside its own.

    Why: the tree's class computes 1 / base^(2i/d) only, so a model with long-context scaling
    (Phi-3.5's longrope, LLaMA-3.1's llama3) cannot be built. The class's own frequencies (and the
    `inv_freq` a checkpoint saves) stay as they are; `self.rope_scaled` holds the scaled ones
    (None when the switches ask for none, the tree's behaviour), from the base the class raises
    and its head size.
    """

    construct = "`def __init__(self, dim, ...)` raising one base to a power (`base ** (...)`)"
    changes_parameters = True

    cls: str
    func: str = "__init__"
    keyword: str = "scaling"

    def leave_FunctionDef(self, original, updated):
        if len(self._class_stack) != 1 or self._class_stack[-1] != self.cls or updated.name.value != self.func:
            return super().leave_FunctionDef(original, updated)
        self._functions_seen.append(self.func)
        params = _params(updated)
        has_param = any(p.name.value == self.keyword for p in params)
        sets = any(mentions(s, SCALED) for s in updated.body.body)
        if has_param and sets:
            self.already_done()
            return updated
        powers = findall(updated.body, m.BinaryOperation(operator=m.Power()))
        problem = (f"{self.keyword} is already a parameter" if has_param else
                   "no head-size parameter" if not params else
                   f"{len(powers)} powers (`base ** ...`) in the body, porter knows one" if len(powers) != 1 else
                   "a *args or keyword-only parameter (porter appends `scaling` last)"
                   if updated.params.star_arg is not cst.MaybeSentinel.DEFAULT or updated.params.kwonly_params else None)
        if problem is not None:
            self.missing(problem)
            return updated
        self.anchored()
        new = cst.Param(name=cst.Name(self.keyword), default=cst.Name("None"),
                        equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                              whitespace_after=cst.SimpleWhitespace("")))
        line = statements(f"self.{SCALED} = scaled_frequencies({code(powers[0].left)}, {params[0].name.value}, "
                          f"{self.keyword})\n")
        body = updated.body.with_changes(body=[*updated.body.body, *line])
        return updated.with_changes(params=updated.params.with_changes(params=[*updated.params.params, new]), body=body)


class _SelfFrequencies(cst.CSTTransformer):
    def __init__(self, attr: str, local: str) -> None:
        super().__init__()
        self.attr, self.local, self.count = attr, local, 0

    def leave_Attribute(self, original, updated):
        if isinstance(updated.value, cst.Name) and updated.value.value == "self" and updated.attr.value == self.attr:
            self.count += 1
            return cst.Name(self.local)
        return updated


def positions_length(stmt: cst.BaseStatement) -> str | None:
    """`L` for `x = torch.arange(L, ...)`, `L + O` for `x = torch.arange(L, ...) + O`."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assign)):
        return None
    value = stmt.body[0].value
    offset = None
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
        value, offset = value.left, value.right
    if not (isinstance(value, cst.Call) and code(value.func) == "torch.arange" and value.args
            and value.args[0].keyword is None and sum(a.keyword is None for a in value.args) == 1):
        return None
    length = code(value.args[0].value)
    return length if offset is None else f"{length} + {code(offset)}"


class FrequenciesByLength(Rewrite):
    """RotaryEmbedding.forward turns its positions by the frequencies of the sequence's length.

    Why: longrope picks its frequencies by the sequence: the short list up to the original
    context, the long one past it (transformers: max(position) + 1 > original). The forward's
    positions are `torch.arange(L) (+ offset)`, so the sequence spans L (+ offset) positions; from
    there on the forward reads `rope_inv_freq = frequencies_for(self.inv_freq, self.rope_scaled,
    L + offset)` where it read `self.inv_freq` (the tree's own frequencies when no scaling is on),
    and every angles it returns are tagged with its attention factor (`return tag_angles(x,
    self.rope_scaled)`): the function computing their cos and sin scales them by the factor of
    the embedding that made them, not of the one built last (Gemma-3's local layers, unscaled,
    beside its global ones under yarn).
    """

    construct = "`positions = torch.arange(length, ...) (+ offset)`, then angles of `self.inv_freq`"

    cls: str
    func: str = "forward"
    attr: str = "inv_freq"

    def rewrite_body(self, body):
        if self.recognised(body, "frequencies_for"):
            return body
        at = next((i for i, s in enumerate(body) if positions_length(s) is not None), None)
        if at is None:
            self.missing("no `x = torch.arange(length, ...)` statement at the forward's top level")
            return body
        rest, count = [], 0
        for stmt in body[at:]:
            if any(isinstance(t.target, cst.Attribute) and code(t.target) == f"self.{self.attr}"
                   for a in findall(stmt, m.Assign()) for t in a.targets):
                self.missing(f"the forward assigns self.{self.attr} after its positions")
                return body
            swap = _SelfFrequencies(self.attr, LOCAL)
            rest.append(stmt.visit(swap))
            count += swap.count
        if not count:
            self.missing(f"no read of self.{self.attr} after the positions")
            return body
        tag = _TagReturns()
        rest = [stmt.visit(tag) for stmt in rest]
        if not tag.count:
            self.missing("no `return` of the angles after the positions")
            return body
        self.anchored()
        choose = statements(f"{LOCAL} = frequencies_for(self.{self.attr}, self.{SCALED}, {positions_length(body[at])})\n")
        return [*body[:at], *choose, *rest]


class _TagReturns(cst.CSTTransformer):
    """`return x` -> `return tag_angles(x, self.rope_scaled)` (not inside a nested function)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def visit_FunctionDef(self, node):
        return False

    def leave_Return(self, original, updated):
        if updated.value is None:
            return updated
        self.count += 1
        return updated.with_changes(value=expression(f"{TAG}({code(updated.value)}, self.{SCALED})"))


class ScaledCosSin(Rewrite):
    """The tree's apply_rotary_pos_emb multiplies cos and sin of the angles by the attention factor.

    Why: yarn and longrope scale cos and sin (transformers: `emb.cos() * attention_scaling`),
    and the tree's rotary embedding hands attention the angles, whose cos and sin this function
    computes. Each `angles.cos()` / `angles.sin()` becomes `(angles.cos() * attention_scaling(...))`,
    in transformers' order (scaled in the angles' dtype, then cast); the factor is 1 when no
    scaling is on, which changes no bit. Its sources: `self` in the class's own method (that
    embedding's factor), else the function's parameters (the angles its caller was handed, tagged
    by the forward that made them).
    """

    construct = "a function computing `angles.cos()` and `angles.sin()`"

    cls: str | None = None
    func: str = "apply_rotary_pos_emb"

    def leave_FunctionDef(self, original, updated):
        self._function = updated  # its parameters are the sources of the factor (rewrite_body)
        return super().leave_FunctionDef(original, updated)

    def rewrite_body(self, body):
        if any(findall(s, m.Call(func=m.Name(SCALE))) for s in body):
            self.already_done()
            return body

        sources = "self" if self.cls else ", ".join(_angle_params(self._function))

        class Scale(cst.CSTTransformer):
            count = 0

            def leave_Call(self, original, updated):
                if isinstance(updated.func, cst.Attribute) and updated.func.attr.value in ("cos", "sin") \
                        and not updated.args:
                    Scale.count += 1
                    return expression(f"({code(updated)} * {SCALE}({sources}))")
                return updated

        out = [s.visit(Scale()) for s in body]
        if Scale.count < 2:
            self.missing(f"{Scale.count} `x.cos()` / `x.sin()` calls")
            return body
        self.anchored()
        return out


def _angle_params(func: cst.FunctionDef) -> list[str]:
    """The parameters whose values the receivers of `x.cos()` / `x.sin()` are made from, directly
    or through one assignment (`freqs_ = freqs[:t.shape[0]]`: freqs, not t)."""
    receivers = [c.func.value for c in findall(func.body, m.Call())
                 if isinstance(c.func, cst.Attribute) and c.func.attr.value in ("cos", "sin") and not c.args]
    names = {n.value for r in receivers for n in findall(r, m.Name())}
    made = [*receivers, *(a.value for a in findall(func.body, m.Assign())
                          if any(isinstance(t.target, cst.Name) and t.target.value in names for t in a.targets))]
    return [p.name.value for p in _params(func) if any(uses_values(e, p.name.value) for e in made)]


def cache_if(stmt: cst.BaseStatement) -> tuple[str, str] | None:
    """(L, C) for `if ... (L > self.C) ...:` whose body builds positions with `torch.arange`: the
    table a forward caches for the longest sequence seen (EleutherAI's RotaryEmbedding)."""
    if not isinstance(stmt, cst.If) or not findall(stmt.body, m.Call(func=m.Attribute(value=m.Name("torch"),
                                                                                      attr=m.Name("arange")))):
        return None
    for comparison in findall(stmt.test, m.Comparison()):
        if len(comparison.comparisons) != 1 or not isinstance(comparison.comparisons[0].operator, cst.GreaterThan):
            continue
        right = comparison.comparisons[0].comparator
        if isinstance(right, cst.Attribute) and isinstance(right.value, cst.Name) and right.value.value == "self":
            return code(comparison.left), right.attr.value
    return None


class CachedFrequenciesByLength(Rewrite):
    """A RotaryEmbedding.forward that caches its table for the longest sequence seen builds it from
    the frequencies of the sequence's length, and again when those change.

    Why: longrope picks its frequencies by the sequence (transformers: the long list past the
    original context), but the class rebuilds its table only for a longer sequence than the one
    cached (`if ... L > self.C:`): after a long sequence a short one would be served the long
    table. The forward now reads `rope_inv_freq = frequencies_for(self.inv_freq, self.rope_scaled,
    L)` before that test, the test also holds when the table was built from other frequencies
    (`self.rope_table_freq`), and the table is built from `rope_inv_freq`. Without scaling
    `rope_inv_freq` is the class's own `inv_freq`: the table is the one it built.
    """

    construct = "`if ... (length > self.cached) ...:` building the table from `torch.arange` and `self.inv_freq`"

    cls: str
    func: str = "forward"
    attr: str = "inv_freq"

    def rewrite_body(self, body):
        if self.recognised(body, "frequencies_for"):
            return body
        at = next((i for i, s in enumerate(body) if cache_if(s) is not None), None)
        if at is None:
            self.missing("no `if ... (length > self.<cached length>):` building the table at the forward's top level")
            return body
        stmt = body[at]
        swap = _SelfFrequencies(self.attr, LOCAL)
        inner = stmt.body.visit(swap)
        if not swap.count:
            self.missing(f"the cached table is not built from self.{self.attr}")
            return body
        self.anchored()
        length, _cached = cache_if(stmt)
        test = stmt.test if isinstance(stmt.test, cst.BooleanOperation) and isinstance(stmt.test.operator, cst.Or) \
            else stmt.test.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        stale = expression(f"{LOCAL} is not getattr(self, 'rope_table_freq', None)")
        test = cst.BooleanOperation(left=test, operator=cst.Or(), right=stale)
        inner = inner.with_changes(body=[*statements(f"self.rope_table_freq = {LOCAL}\n"), *inner.body])
        choose = statements(f"{LOCAL} = frequencies_for(self.{self.attr}, self.{SCALED}, {length})\n")
        return [*body[:at], *choose, stmt.with_changes(test=test, body=inner), *body[at + 1:]]
