"""The fused HF tensors as the weights of a layer: each one cut into the HF tensors its slot's
weight is made of (q, k, v; gate, up), and made again from them on the way back.

A slot's weight says how the tree's tensor is made from HF's unfused ones (`join`, e.g. q, k, v
interleaved per key/value head) and split back; the fused weight wraps it: HF's fused tensor is
cut along its rows into those parts first (q: heads x head size rows, k and v: key/value heads x
head size each; gate and up: halves), and the parts are concatenated after the split. Views and
one concatenation: pure copies, so HF -> Megatron -> HF gives back the same bits, and meta
tensors plan a conversion as real ones do. A bias (a spec's `linear` bias on these sites) follows
the same way, by the bias difference's own rule (its weight's names with .bias).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, replace

if TYPE_CHECKING:
    import torch

from porter.errors import PorterError
from porter.weights import LayerWeights, ModelShape, Weight


@dataclass(frozen=True)
class Fused:
    """One fused HF projection: its module, the unfused modules it holds (in row order), the
    layer slot whose weight they make, and the parts' row counts for a model shape."""

    module: str
    parts: tuple[str, ...]
    slot: str
    rows: object  # (ModelShape) -> tuple of row counts, or None: equal parts

    def sizes(self, shape: ModelShape) -> tuple[int, ...] | None:
        return self.rows(shape) if self.rows is not None else None


FUSED = {
    "qkv": Fused("self_attn.qkv_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "qkv",
                 lambda s: (s.num_attention_heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim)),
    "gate_up": Fused("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj"), "mlp_in", None),
}


def _cut(tensor: torch.Tensor, count: int, sizes: tuple[int, ...] | None) -> tuple[torch.Tensor, ...]:
    """A fused tensor's parts along its rows (views)."""
    return tensor.chunk(count, dim=0) if sizes is None else tensor.split(list(sizes), dim=0)


def fused_weight(weight: Weight, fused: Fused, shape: ModelShape) -> Weight:
    """The slot's weight read from (and written as) HF's one fused tensor."""
    import torch
    suffix = weight.hf[0].rsplit(".", 1)[1]  # weight (or bias)
    count, sizes = len(fused.parts), fused.sizes(shape)
    return replace(weight, hf=(f"{fused.module}.{suffix}",),
                   join=lambda tensors: weight.to_tree(_cut(tensors[0], count, sizes)),
                   split=lambda tensor: (torch.cat(list(weight.to_hf(tensor)), dim=0),))


def fuse(layer: LayerWeights, fused: Fused) -> None:
    """The slot's weights that are made of the fused module's parts, made of the fused tensor."""
    layer.slots[fused.slot] = [_fused_or_as_is(layer, weight, fused) for weight in layer.slots.get(fused.slot, [])]


def _fused_or_as_is(layer: LayerWeights, weight: Weight, fused: Fused) -> Weight:
    if not weight.hf:
        return weight
    suffix = weight.hf[0].rsplit(".", 1)[1]  # weight (or bias)
    parts = tuple(f"{part}.{suffix}" for part in fused.parts)
    if weight.hf == parts:
        if layer.hf_names is not None and not _held(layer, f"{fused.module}.{suffix}") \
                and all(_held(layer, part) for part in parts):
            return weight  # the checkpoint at hand spells them apart
        return fused_weight(weight, fused, layer.shape)
    if set(weight.hf) < set(parts):
        raise PorterError(
            f"the tree keeps a part of HF's {fused.module} in a tensor of its own",
            construct=f"one {fused.slot} tensor made of {', '.join(parts)}",
            found=f"{weight.key} <- {', '.join(weight.hf)}",
            fix="port the tree's MLP with porter's fused gate+up projection (--activation-func-type swiglu), "
                "or convert the fused tensors by hand",
        )
    return weight


def _held(layer: LayerWeights, name: str) -> bool:
    """Does the HF checkpoint at hand hold this tensor of the layer (`name` relative to it)?"""
    return f"model.layers.{layer.index}.{name}" in layer.hf_names
