"""Rewrites of calls inside a method, shared by the differences."""

from __future__ import annotations

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import add_kwarg, dotted, expression, kwarg
from porter.edits.base import Rewrite, replace_each


class AddKeyword(Rewrite):
    """Pass one more keyword argument to every call of a class or function inside a method.

    Why: a difference that refines another one's object (rope scaling refines the rotary
    embedding) says so where that object is built, as a keyword the builder takes
    (`RotaryEmbedding(..., scaling=rope_scaling_of(args))`), leaving the rest of the call as it is.
    """

    construct = "a call of the named class in the method"

    cls: str
    func: str
    callee: str
    keyword: str
    value: str

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
