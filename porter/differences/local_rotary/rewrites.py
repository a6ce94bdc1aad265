"""Rewrite of the tree's attention for a local rotary base (Gemma-3)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, mentions, statements, with_comment
from porter.differences.rotary.detect import ROTARY_CLASS
from porter.edits.base import Rewrite

WINDOW = "self.sliding_window"
# the tree's class built, however the call spells it (detect.built_in finds it by its name alone)
ROTARY_CALL = m.Call(func=m.Name(ROTARY_CLASS) | m.Attribute(attr=m.Name(ROTARY_CLASS)))


class LocalRotaryEmbedding(Rewrite):
    """A layer under the sliding window gets a rotary embedding of the local base, unscaled.

    Why: Gemma-3 rotates its local (sliding-window) layers with rope_local_base_freq (10000) and
    no scaling, its global layers with rope_theta (1e6) and rope_scaling. The attention already
    holds its layer's window (`self.sliding_window`, None on global layers) and its rotary
    embedding (built with the global base and the scaling switches); right after the window is
    kept, a windowed layer builds its own with the local base: the call that built the first one,
    its base keyword (`keyword`: porter's `theta`, EleutherAI's `base`) given the local value, its
    scaling off (`unscaled`: the scaling keyword, passed None, where the spec scales the global
    layers), its other arguments (the head size, the tree's precision) as they are. The tree's
    own test for building it (`if <rotary on>:`, the tree's own class) guards the second one
    too; porter's own attribute, None when rotary is off, is tested as such.
    Where the window is kept by another module (the tree's core attention class, Habana's), the
    layer's window is `window` (its expression of the switches and the layer number), read
    right after the rotary embedding is built.
    """

    construct = ("`self.<rotary> = RotaryEmbedding(<head size>, ...)` (or under `if <rotary on>:`) then "
                 "`self.sliding_window = ...` in __init__ (or its layer_number parameter)")

    func = "__init__"
    cls: str
    value: str  # the switch's value, e.g. args.local_rope_theta
    window: str = ""  # the layer's window where the class keeps none, e.g. layer_window(..., layer_number)
    keyword: str = "theta"  # the class's base parameter (EleutherAI's is `base`)
    unscaled: str = ""  # the scaling keyword the local one passes None to (the global layers are scaled)

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and mentions(s.test, self.value)):
            return body
        at_built = next((i for i, s in enumerate(body) if findall(s, ROTARY_CALL)), None)
        built = findall(body[at_built], ROTARY_CALL) if at_built is not None else []
        if not built or not built[0].args:
            self.missing("no RotaryEmbedding(...) built")
            return body
        guard, target = _guard(body[at_built], body[:at_built])
        if target is None:
            self.missing("the RotaryEmbedding is not assigned to an attribute (`self.<rotary> = RotaryEmbedding(...)`), "
                         "as a statement of its own or in the body of one `if <test>:`")
            return body
        at = next((i for i, s in enumerate(body) if WINDOW in assigned_names(s)), None)
        window = WINDOW
        if at is None and self.window and any(mentions(s, "layer_number") for s in body):
            at = max(i for i, s in enumerate(body) if findall(s, ROTARY_CALL))
            window = self.window
        if at is None:
            self.missing(f"no `{WINDOW} = ...` (the layer's window), nor a layer_number parameter to compute it")
            return body
        self.anchored()
        new = statements(f"if {guard} and {window} and {self.value} is not None:\n"
                         f"    {target} = {self._local_call(built[0])}\n")[0]
        new = with_comment(new, "Local layers' rotary base (Gemma-3): a layer under the sliding window rotates with "
                                "its own base, unscaled.")
        at = max(at, at_built)
        return [*body[:at + 1], new, *body[at + 1:]]

    def _local_call(self, call: cst.Call) -> str:
        """The call that built the global one, with the local base and no scaling."""
        args, given = [], False
        for arg in call.args:
            name = arg.keyword.value if arg.keyword is not None else None
            if name == self.unscaled:
                continue
            if name == self.keyword:
                args.append(f"{name}={self.value}")
                given = True
            else:
                args.append(f"{name}={code(arg.value)}" if name else code(arg.value))
        if not given:
            args.append(f"{self.keyword}={self.value}")
        if self.unscaled:
            args.append(f"{self.unscaled}=None")
        return f"{code(call.func)}({', '.join(args)})"


def _guard(stmt: cst.BaseStatement, before: list[cst.BaseStatement]) -> tuple[str, str | None]:
    """(the test under which the second one is built, the attribute the first is assigned to):
    `self.x is not None` where the attribute is always set (`self.x = RotaryEmbedding(...) if ...
    else None`, or `self.x = None` before the tree's `if <test>:`, porter's own), else the tree's
    `if <test>:` whose body assigns `self.x = RotaryEmbedding(...)` (EleutherAI's, under the tree's
    rotary test; other statements beside it, an `else:`, one line, alike)."""
    under_if = isinstance(stmt, cst.If)
    target = _assigned(stmt.body.body if under_if else [stmt])
    if target is None:
        return "", None
    if not under_if or any(_sets_none(s, target) for s in before):
        return f"{target} is not None", target
    test = code(stmt.test)
    loose = isinstance(stmt.test, (cst.BooleanOperation, cst.IfExp, cst.Lambda, cst.NamedExpr)) and not stmt.test.lpar
    return (f"({test})" if loose else test), target


def _assigned(body) -> str | None:
    """The attribute the RotaryEmbedding is assigned to, by a statement of `body` (lines, or the
    small statements of a one-line suite), else None."""
    smalls = [small for s in body for small in (s.body if isinstance(s, cst.SimpleStatementLine) else [s])]
    for small in smalls:
        if isinstance(small, cst.Assign) and findall(small.value, ROTARY_CALL) and len(small.targets) == 1 \
                and isinstance(small.targets[0].target, cst.Attribute):
            return code(small.targets[0].target)
    return None


def _sets_none(stmt: cst.BaseStatement, target: str) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and any(
        isinstance(small, cst.Assign) and isinstance(small.value, cst.Name) and small.value.value == "None"
        and any(code(t.target) == target for t in small.targets) for small in stmt.body)
