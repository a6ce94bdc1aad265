"""Rewrites that give the tree's own rotary embedding a base switch (tree_base.py finds the shape)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import add_kwarg, code, dotted, expression, kwarg
from porter.edits.base import Rewrite


class RotaryBaseParameter(Rewrite):
    """RotaryEmbedding.__init__ takes its base as a parameter (`theta`, default the number it had).

    Why: the tree's class raises a hard-coded 10000 to the frequencies' exponent, so a model
    trained with another base (Qwen3, OLMo-2, Gemma-3: 1e6, 5e5) cannot be built. The number
    becomes the default of a new keyword parameter, which the callers pass from the base
    option; a caller that passes nothing keeps the tree's old base.
    """

    construct = "`def __init__(self, dim)` raising one number literal to a power (`10000 ** (...)`)"
    changes_parameters = True

    cls: str
    func: str = "__init__"
    name: str = "theta"
    literal: str = "10000"

    def leave_FunctionDef(self, original, updated):
        if len(self._class_stack) != 1 or self._class_stack[-1] != self.cls or updated.name.value != self.func:
            return super().leave_FunctionDef(original, updated)
        self._functions_seen.append(self.func)
        params = updated.params
        raised = [p for p in findall(updated.body, m.BinaryOperation(operator=m.Power()))
                  if isinstance(p.left, (cst.Integer, cst.Float)) and code(p.left) == self.literal]
        has_param = any(p.name.value == self.name for p in (*params.params, *params.kwonly_params))
        if has_param and not raised:
            self.already_done()
            return updated
        if has_param or len(raised) != 1 or params.star_arg is not cst.MaybeSentinel.DEFAULT:
            self.missing(f"{self.name} is already a parameter" if has_param else
                         f"{len(raised)} `{self.literal} ** ...` in the body" if len(raised) != 1 else
                         "a *args or keyword-only parameter (porter appends the base last)")
            return updated
        self.anchored()
        new = cst.Param(name=cst.Name(self.name), default=expression(self.literal),
                        equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                              whitespace_after=cst.SimpleWhitespace("")))
        body = updated.body.deep_replace(raised[0], raised[0].with_changes(left=cst.Name(self.name)))
        return updated.with_changes(params=params.with_changes(params=[*params.params, new]), body=body)


class _PassBase(cst.CSTTransformer):
    def __init__(self, callee: str, keyword: str, value: str) -> None:
        super().__init__()
        self.callee, self.keyword, self.value = callee, keyword, value

    def leave_Call(self, original, updated):
        if (dotted(updated.func) or "").rsplit(".", 1)[-1] != self.callee or kwarg(updated, self.keyword) is not None:
            return updated
        return add_kwarg(updated, self.keyword, expression(self.value))


def pass_base(text: str, callee: str, keyword: str, value: str) -> str:
    """Statements of the tree copied elsewhere (the generated entry point copies the pipe's rotary
    table) with the base passed to every call of the class, as AddKeyword passes it in the tree."""
    return cst.parse_module(text).visit(_PassBase(callee, keyword, value)).code
