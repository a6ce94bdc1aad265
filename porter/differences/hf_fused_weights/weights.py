"""The fused HF tensors as the weights of a layer: each one cut into the HF tensors its slot's
weight is made of (q, k, v; gate, up), and made again from them on the way back.

A slot's weight says how the tree's tensor is made from HF's unfused ones (`join`, e.g. q, k, v
interleaved per key/value head) and split back; the fused weight wraps it: HF's fused tensor is
cut along its rows into those parts first (q: heads x head size rows, k and v: key/value heads x
head size each; gate and up: halves), and the parts are concatenated after the split. Where
the tree keeps the parts in several tensors (a gate tensor and an up one: Habana's hand port;
q apart from (k, v): a tree's own grouped-query attention), each of those weights is made of its
run of parts only: its rows of the fused tensor (Weight.hf_rows, at their offsets), cut from it
on the way in; on the way out convert's engine puts the fused tensor together from every weight
holding rows of it. Tensor parallelism shards each tree tensor by its own role, so each rank
holds its shard of the gate and of the up projection. Views and one concatenation: pure
copies, so HF -> Megatron -> HF gives back the same bits, and meta tensors plan a conversion as
real ones do. A bias (a spec's `linear` bias on these sites) follows
the same way, by the bias difference's own rule (its weight's names with .bias).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.errors import PorterError
from porter.weights import LayerWeights, ModelShape, Rows, Weight


@dataclass(frozen=True)
class Fused:
    """One fused HF projection: its module, the unfused modules it holds (in row order), the
    layer slot whose weights they make, the parts' row counts for a model shape, and whether
    the parts are equal (its output then cut in equal parts by verify's probes)."""

    module: str
    parts: tuple[str, ...]
    slot: str
    rows: Callable[[ModelShape], tuple[int, ...]]
    equal: bool = False


FUSED = {
    "qkv": Fused("self_attn.qkv_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "qkv",
                 lambda s: (s.num_attention_heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim)),
    "gate_up": Fused("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj"), "mlp_in",
                     lambda s: (s.ffn_hidden_size, s.ffn_hidden_size), equal=True),
}


def _cut(tensor: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """A fused tensor's parts (or a run of them) along its rows (views)."""
    return tensor.split(list(sizes), dim=0)


def fused_weight(weight: Weight, fused: Fused, shape: ModelShape, first: int = 0, last: int | None = None) -> Weight:
    """The slot's weight read from (and written as) HF's one fused tensor: the whole of it, or,
    where the weight is made of parts first..last of it only, those parts' rows (Weight.hf_rows;
    the other parts are other tree tensors')."""
    suffix = weight.hf[0].rsplit(".", 1)[1]  # weight (or bias)
    sizes = fused.rows(shape)
    last = len(sizes) if last is None else last
    whole = (first, last) == (0, len(sizes))
    rows = () if whole else (Rows(sum(sizes[:first]), sum(sizes[:last]), sum(sizes)),)
    return replace(weight, hf=(f"{fused.module}.{suffix}",), hf_rows=rows,
                   join=lambda tensors: weight.to_tree(_cut(tensors[0], sizes[first:last])),
                   split=lambda tensor: (_concatenated(weight.to_hf(tensor)),))


def _concatenated(parts) -> torch.Tensor:
    """The parts' rows one after the other (the one part itself: no copy)."""
    import torch
    return parts[0] if len(parts) == 1 else torch.cat(list(parts), dim=0)


def fuse(layer: LayerWeights, fused: Fused) -> None:
    """The slot's weights that are made of the fused module's parts, made of the fused tensor."""
    layer.slots[fused.slot] = [_fused_or_as_is(layer, weight, fused) for weight in layer.slots.get(fused.slot, [])]


def _fused_or_as_is(layer: LayerWeights, weight: Weight, fused: Fused) -> Weight:
    """The weight made of the fused tensor where it is made of its parts (all of them, or a run
    of them in order: the tree keeps the others in tensors of their own); as it is otherwise, and
    where the checkpoint at hand spells the parts apart."""
    if not weight.hf:
        return weight
    suffix = weight.hf[0].rsplit(".", 1)[1]  # weight (or bias)
    parts = tuple(f"{part}.{suffix}" for part in fused.parts)
    if not set(weight.hf) & set(parts):
        return weight
    run = _run(weight.hf, parts)
    if run is None:
        raise PorterError(
            f"the tree keeps parts of HF's {fused.module} in one tensor in another order than HF's",
            construct=f"a {fused.slot} tensor made of a run of {', '.join(parts)}, in that order",
            found=f"{weight.key} <- {', '.join(weight.hf)}",
            fix="convert the fused tensors by hand, or port the tree's projections with porter's own layout",
        )
    if layer.hf_names is not None and not _held(layer, f"{fused.module}.{suffix}") \
            and all(_held(layer, part) for part in weight.hf):
        return weight  # the checkpoint at hand spells them apart
    return fused_weight(weight, fused, layer.shape, *run)


def _run(names: tuple[str, ...], parts: tuple[str, ...]) -> tuple[int, int] | None:
    """(first, last) where names are parts[first:last], None where they are not such a run."""
    if names[0] not in parts:
        return None
    first = parts.index(names[0])
    return (first, first + len(names)) if parts[first:first + len(names)] == names else None


def _held(layer: LayerWeights, name: str) -> bool:
    """Does the HF checkpoint at hand hold this tensor of the layer (`name` relative to it)?"""
    return f"model.layers.{layer.index}.{name}" in layer.hf_names
