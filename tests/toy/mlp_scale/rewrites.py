"""The toy's rewrites of the tree's ParallelTransformerLayer."""

from __future__ import annotations

from porter.cst.nodes import code, statements
from porter.edits.base import Rewrite

ATTR = "self.mlp_scale"


class AddMLPScale(Rewrite):
    """Build the scale module after the MLP: `self.mlp_scale = MLPScale(hidden) if <switch> else None`.

    Why: the layer owns the scale as it owns its MLP, so the scale's weight is saved in the
    layer's state dict next to the MLP's."""

    construct = "`self.mlp = ...` in ParallelTransformerLayer.__init__"
    func = "__init__"
    cls: str
    test: str

    def rewrite_body(self, body):
        if self.recognised(body, ATTR):
            return body
        at = next((i for i, s in enumerate(body) if "self.mlp = " in code(s)), None)
        if at is None:
            self.missing("no `self.mlp = ...`")
            return body
        self.anchored()
        new = statements(f"{ATTR} = MLPScale(args.hidden_size) if {self.test} else None")
        return [*body[: at + 1], *new, *body[at + 1:]]


class ScaleMLPOutput(Rewrite):
    """Scale the MLP's output right after the MLP: `mlp_output = self.mlp_scale(mlp_output)`.

    Why: the scale multiplies what the MLP hands the residual add (its bias, where there is one,
    is added after it, as the reference adds none)."""

    construct = "`mlp_output, mlp_bias = self.mlp(...)` in ParallelTransformerLayer.forward"
    func = "forward"
    cls: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: "self.mlp_scale(mlp_output)" in code(s)):
            return body
        at = next((i for i, s in enumerate(body) if "= self.mlp(" in code(s)), None)
        if at is None:
            self.missing("no call of self.mlp")
            return body
        self.anchored()
        new = statements(f"if {ATTR} is not None:\n    mlp_output = {ATTR}(mlp_output)")
        return [*body[: at + 1], *new, *body[at + 1:]]
