"""Rewrites of the tree's attention for sliding-window attention (Mistral).

Three small edits: the attention module keeps its layer's window (`__init__`), its masked
softmax's fused kernels stay off on a windowed layer (`__init__`: the causal one ignores the
mask), and the attention mask gains the window just before the core attention reads it
(`forward`, or the method holding the core), so porter's fused kernel and the tree's unfused
softmax hide the same keys. The mask function lives in megatron/model/sliding_window.py
(sliding_window.py.j2 here).
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
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


class SoftmaxFusionOff(Rewrite):
    """On a windowed layer the masked softmax's fused kernels stay off: `self.<softmax>.scaled_masked_softmax_fusion = False`.

    Why: Megatron's FusedScaleMaskSoftmax, built for a causal mask, runs its fused upper-triangular
    kernel on half-precision scores (CUDA, --masked-softmax-fusion, the tree's default) and that
    kernel masks the future itself and never reads the mask: the window would be left out in
    exactly the runs that train. With the fusion off the softmax takes its torch path, which
    applies the mask it is given; the layers without a window (every N-th, or the switch off)
    keep the tree's kernel.
    """

    construct = "`self.<softmax> = FusedScaleMaskSoftmax(...)` in the core attention's __init__"

    func = "__init__"
    cls: str
    softmax: str

    def rewrite_body(self, body):
        new = statements(f"if {WINDOW}:\n    self.{self.softmax}.scaled_masked_softmax_fusion = False\n")[0]
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.with_changes(leading_lines=[])) == code(new)):
            return body
        if not any(f"self.{self.softmax}" in assigned_names(s) for s in body):
            self.missing(f"no `self.{self.softmax} = FusedScaleMaskSoftmax(...)` in __init__")
            return body
        self.anchored()
        return [*body, with_comment(new, "Sliding-window attention: the softmax's fused causal kernel never reads the "
                                         "mask; a windowed layer takes its torch path, which applies it.")]


class SlidingWindowMask(Rewrite):
    """Add the window to the attention mask right before the core attention.

    Why: a sliding window hides keys older than `window - 1` positions, on top of the tree's
    causal mask. Both the fused kernel (porter's `fused_attention`, which turns an exactly
    causal mask into `is_causal` and passes any other mask) and the tree's unfused softmax read
    `attention_mask`, so the windowed mask goes in front of both: before porter's `if
    fused_attention_applies(...)`, or before the tree's core attention (its baddbmm scores)
    where porter left it fusable, or else right before the tree's masked softmax call
    (`self.<softmax>(scores, <mask>)`: a core porter keeps unfused, ALiBi's or one in a helper
    method). The mask there spans every key, its rows the last queries (a key/value cache
    slices it to the last row, which the window reads as the last position), and the keys are
    final (after the cache), so positions are absolute.
    """

    construct = ("porter's `if fused_attention_applies(...)`, the core attention (torch.baddbmm scores ... "
                 "context_layer), or the masked softmax call `self.<softmax>(<scores>, <mask>)`")

    cls: str
    func: str
    softmax: str = "scale_mask_softmax"
    mask: str = "attention_mask"
    key: str = "key_layer"

    def rewrite_body(self, body):
        if self.recognised(body, "sliding_window_mask"):
            return body
        mask = self.mask
        at = next((i for i, s in enumerate(body) if isinstance(s, cst.If) and mentions(s.test, FUSED_MARK)), None)
        if at is None:
            span = core_span(body)
            at = None if span is None else span.start
        if at is None:
            at, mask = self._softmax_call(body)
            if at is None:
                return body
        if not any(mentions(s, mask) for s in body):
            self.missing(f"the function does not read {mask}")
            return body
        if not any(mentions(s, self.key) for s in body):
            self.missing(f"the function does not read {self.key} (the attention's keys)")
            return body
        self.anchored()
        new = statements(f"{mask} = sliding_window_mask({mask}, {WINDOW}, {self.key})")[0]
        new = with_comment(new, "Sliding-window attention: keys older than the window are masked out too.")
        return insert_before(body, at, [new])

    def _softmax_call(self, body):
        """(index of the statement calling self.<softmax>(scores, <mask>), the mask's name), or
        (None, None) and missing says why."""
        call = m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(self.softmax)))
        at = next((i for i, s in enumerate(body) if findall(s, call)), None)
        if at is None:
            self.missing("neither porter's fused attention, a core attention (torch.baddbmm scores ... "
                         f"context_layer) nor a call of self.{self.softmax}(scores, mask)")
            return None, None
        args = findall(body[at], call)[0].args
        if len(args) < 2 or not isinstance(args[1].value, cst.Name) or args[1].keyword is not None:
            self.missing(f"self.{self.softmax}(...) is not given the mask by name as its second argument")
            return None, None
        return at, args[1].value.value
