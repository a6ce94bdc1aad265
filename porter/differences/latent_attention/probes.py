"""What verify compares in multi-head latent attention, in forward order: the query (its
compressed form and norm first, where it has one), the latent with the shared rotary key, the
latent's norm, the per-head keys and values made from it; then the layer's attention context
and output projection, as for every attention.

HF's rotary dimensions are interleaved pairs where the tree's are halves (weights.py here): the
query's and the latent's rotary part are compared in the tree's order."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.differences.latent_attention.weights import halves_order
from porter.probe import LayerProbes


def _reordered(value: torch.Tensor, head: int, rope: int, on: bool) -> torch.Tensor:
    """HF's [b, s, blocks * head] with the last `rope` of each block in the tree's order."""
    import torch
    if not on:
        return value
    b, s = value.shape[:2]
    blocks = value.reshape(b, s, -1, head)
    tail = blocks[..., head - rope:].index_select(-1, halves_order(rope))
    return torch.cat((blocks[..., :head - rope], tail), dim=-1).reshape(b, s, -1)


def _tokens(value: torch.Tensor) -> torch.Tensor:
    """HF runs kv_b_proj on the latent viewed as one head, [b, 1, s, ...]: as [b, s, ...]."""
    return value.flatten(1, 2) if value.dim() == 4 else value


def latent_probes(layer: LayerProbes, nope: int, rope: int, kv_rank: int, q_rank: int | None, on: bool) -> None:
    a, hf = layer.layout.attention, f"{layer.hf}.self_attn"

    def query(c, name=("q_proj" if q_rank is None else "q_b_proj")):
        return _reordered(c[f"{hf}.{name}"], nope + rope, rope, on)

    probes = []
    if q_rank is not None:
        probes += [layer.probe(f"{a}.q_a_proj", "compressed query (replicated)", layer.ref("self_attn.q_a_proj")),
                   layer.probe(f"{a}.q_a_layernorm", "compressed query's norm", layer.ref("self_attn.q_a_layernorm"))]
    probes += [
        layer.probe(f"{a}.{'q_proj' if q_rank is None else 'q_b_proj'}", "query per head [np, nope + rope] "
                    "(rotary part in the tree's order)", query, take="output+bias", combine="cat"),
        layer.probe(f"{a}.kv_a_proj_with_mqa", "latent and shared rotary key (replicated)",
                    lambda c: _reordered(c[f"{hf}.kv_a_proj_with_mqa"], kv_rank + rope, rope, on)),
        layer.probe(f"{a}.kv_a_layernorm", "latent's norm", layer.ref("self_attn.kv_a_layernorm")),
        layer.probe(f"{a}.kv_b_proj", "keys (no rotary part) and values per head, from the latent",
                    lambda c: _tokens(c[f"{hf}.kv_b_proj"]), take="output+bias", combine="cat"),
    ]
    layer.replace("qkv", probes)
    if "rotary" in layer.slots:  # the rotary probe reads q_proj, k_proj: latent attention has neither
        layer.replace("rotary", [])
