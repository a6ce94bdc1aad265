"""Rewrite of the tree's attention for a local rotary base (Gemma-3)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, mentions, statements, with_comment
from porter.edits.base import Rewrite

ROTARY = "self.rotary_emb"
WINDOW = "self.sliding_window"


class LocalRotaryEmbedding(Rewrite):
    """A layer under the sliding window gets a rotary embedding of the local base, unscaled.

    Why: Gemma-3 rotates its local (sliding-window) layers with rope_local_base_freq (10000) and
    no scaling, its global layers with rope_theta (1e6) and rope_scaling. The attention already
    holds its layer's window (`self.sliding_window`, None on global layers) and its rotary
    embedding (built with the global base and the scaling switches); right after the window is
    kept, a windowed layer builds its own with the local base, the head size as the first one has it.
    Where the port scales the rotary frequencies (rope scaling: Gemma-3 4B-27B's linear x8 on the
    global layers), the call says `scaling=None` outright: the local layers stay unscaled, and
    the scaling's own rewrite (every RotaryEmbedding call without a `scaling`) leaves it alone.
    Where the window is kept by another module (the tree's core attention class, Habana's), the
    layer's window is `window` (its expression of the switches and the layer number), read
    right after the rotary embedding is built.
    """

    construct = ("`self.rotary_emb = RotaryEmbedding(<head size>, ...)` then `self.sliding_window = ...` in __init__ "
                 "(or its layer_number parameter)")

    func = "__init__"
    cls: str
    value: str  # the switch's value, e.g. args.local_rope_theta
    window: str = ""  # the layer's window where the class keeps none, e.g. layer_window(..., layer_number)
    scaled: bool = False  # the port's RotaryEmbedding takes a `scaling` (rope scaling is ported)

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and mentions(s.test, self.value)):
            return body
        built = [c for s in body for c in findall(s, m.Call(func=m.Name("RotaryEmbedding")))]
        if not built or not built[0].args:
            self.missing("no RotaryEmbedding(...) built")
            return body
        at = next((i for i, s in enumerate(body) if WINDOW in assigned_names(s)), None)
        window = WINDOW
        if at is None and self.window and any(mentions(s, "layer_number") for s in body):
            at = max(i for i, s in enumerate(body) if findall(s, m.Call(func=m.Name("RotaryEmbedding"))))
            window = self.window
        if at is None:
            self.missing(f"no `{WINDOW} = ...` (the layer's window), nor a layer_number parameter to compute it")
            return body
        self.anchored()
        head = code(built[0].args[0].value)
        new = statements(f"if {ROTARY} is not None and {window} and {self.value} is not None:\n"
                         f"    {ROTARY} = RotaryEmbedding({head}, theta={self.value}"
                         f"{', scaling=None' if self.scaled else ''})\n")[0]
        new = with_comment(new, "Local layers' rotary base (Gemma-3): a layer under the sliding window rotates with "
                                "its own base, unscaled.")
        return [*body[:at + 1], new, *body[at + 1:]]
