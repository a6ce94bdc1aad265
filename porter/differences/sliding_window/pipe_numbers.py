"""Repair of the tree's pipeline model, where its own GPT classes carry the port: its layers are
numbered from 1, as its plain transformer numbers them, so that a per-layer choice made from the
layer number (the window pattern, and the local rotary base that follows it) falls on the same
layers in both models."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, expression, with_comment
from porter.edits.base import Rewrite


class PipeLayersNumberedFromOne(Rewrite):
    """`LayerSpec(<layer>, ..., layer_number=<i>)` in the pipe's `for <i> in range(...)` becomes `<i> + 1`.

    Why: the tree's plain transformer numbers its layers from 1 (`i + 1 + offset`), and porter's
    `layer_window(window, pattern, layer_number)` counts them so (every pattern-th layer global);
    the tree's GPTModelPipe hands its layer specs the loop index, from 0, so in the pipe every
    layer would take its neighbour's window (Gemma-2: the local and global layers swapped). The
    tree's other uses of the number take it as a position from 1 too (the attention's
    `max(1, layer_number)`: its softmax scaling, its key/value cache slot).
    """

    construct = "`for <i> in range(...): self.specs.append(LayerSpec(..., layer_number=<i>, ...))` in __init__"

    func = "__init__"
    cls: str

    def rewrite_body(self, body):
        for at, stmt in enumerate(body):
            if not isinstance(stmt, cst.For) or not isinstance(stmt.target, cst.Name):
                continue
            index = stmt.target.value
            numbered = [a for a in findall(stmt.body, m.Arg(keyword=m.Name("layer_number")))]
            if not numbered:
                continue
            arg = numbered[0]
            if code(arg.value) == f"{index} + 1":
                self.already_done()
                return body
            if not (isinstance(arg.value, cst.Name) and arg.value.value == index):
                continue
            self.anchored()
            new = stmt.deep_replace(arg, arg.with_changes(value=expression(f"{index} + 1")))
            return [*body[:at], with_comment(new, "layers numbered from 1, as the plain transformer numbers them "
                                                  "(the window pattern counts them so)"), *body[at + 1:]]
        self.missing("no `layer_number=<loop index>` in a for loop over the layers")
        return body
