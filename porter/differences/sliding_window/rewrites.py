"""Rewrites of the tree's attention for sliding-window attention (Mistral).

Two small edits: the attention module keeps its layer's window (`__init__`), and the
attention mask gains the window just before the core attention reads it (`forward`), so the
fused kernel and the tree's unfused softmax hide the same keys. The mask function lives in
megatron/model/sliding_window.py (sliding_window.py.j2 here).
"""

from __future__ import annotations

import libcst as cst

from porter.cst.nodes import assigned_names, code, insert_before, mentions, statements, with_comment
from porter.edits.base import Rewrite
from porter.profile.attention import FUSED_MARK, core_span

WINDOW = "self.sliding_window"


class SlidingWindowAttribute(Rewrite):
    """Keep the layer's window on the attention module: `self.sliding_window = layer_window(...)`.

    Why: the window is a switch of the tree's arguments (`--sliding-window`, and
    `--sliding-window-pattern` for the layers without it); reading it once in `__init__` is how
    the tree's attention keeps its other settings (dropout, softmax scaling). The layer number
    is the constructor's own, counted from 1 as the tree's ParallelTransformer counts it. An
    earlier port's line (`self.sliding_window = args.sliding_window`, every layer windowed) is
    replaced by this one, so a tree holds one line that serves every family ported into it.
    """

    construct = "the attention class's __init__ (with its layer_number parameter)"

    func = "__init__"
    cls: str
    value: str

    def rewrite_body(self, body):
        new = statements(f"{WINDOW} = {self.value}")[0]
        if self.recognised(body, lambda s: code(s) == code(new)):
            return body
        if "layer_number" in self.value and not any(mentions(s, "layer_number") for s in body):
            self.missing("__init__ does not use a layer_number parameter")
            return body
        self.anchored()
        earlier = next((i for i, s in enumerate(body) if WINDOW in assigned_names(s)
                        and isinstance(s, cst.SimpleStatementLine)), None)
        if earlier is not None:
            return [*body[:earlier], body[earlier].with_changes(body=new.body), *body[earlier + 1:]]
        text = "Sliding-window attention: keys a query sees, itself included (None or 0: all)"
        if "layer_number" in self.value:
            text += "; every N-th layer has none (--sliding-window-pattern)"
        return [*body, with_comment(new, text + ".")]


class SlidingWindowMask(Rewrite):
    """Add the window to the attention mask right before the core attention.

    Why: a sliding window hides keys older than `window - 1` positions, on top of the tree's
    causal mask. Both the fused kernel (porter's `fused_attention`, which turns an exactly
    causal mask into `is_causal` and passes any other mask) and the tree's unfused softmax read
    `attention_mask`, so the windowed mask goes in front of both: before porter's `if
    fused_attention_applies(...)`, or before the tree's core attention (its baddbmm scores)
    where porter left it unfused. The mask there still spans every position (a key/value cache
    slices it later), and the keys are final (after the cache), so positions are absolute.
    """

    construct = "porter's `if fused_attention_applies(...)` or the core attention (torch.baddbmm scores ... context_layer)"

    cls: str
    func: str
    mask: str = "attention_mask"
    key: str = "key_layer"

    def rewrite_body(self, body):
        if self.recognised(body, "sliding_window_mask"):
            return body
        if not any(mentions(s, self.mask) for s in body):
            self.missing(f"the function does not read {self.mask}")
            return body
        at = next((i for i, s in enumerate(body) if isinstance(s, cst.If) and mentions(s.test, FUSED_MARK)), None)
        if at is None:
            span = core_span(body)
            if span is None:
                self.missing("neither porter's fused attention nor a core attention (torch.baddbmm scores ... context_layer)")
                return body
            at = span.start
        self.anchored()
        new = statements(f"{self.mask} = sliding_window_mask({self.mask}, {WINDOW}, {self.key})")[0]
        new = with_comment(new, "Sliding-window attention: keys older than the window are masked out too.")
        return insert_before(body, at, [new])
