"""What verify compares for the query/key norm: q and k right after their norms."""

from __future__ import annotations

import torch

from porter.probe import LayerProbes


def _heads_flat(value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The tree's q or k [s, b, heads, hn] -> [s, b, heads * hn]: ranks' heads join on the last dim."""
    return value.flatten(2)


def add_qk_norm_probes(layer: LayerProbes) -> None:
    """After the q, k, v projection: q and k normalised, [b, s, heads * hn] (HF's q_norm and
    k_norm outputs, per head [b, s, heads, hn] or whole [b, s, heads * hn]); and rotary then
    rotates HF's normalised q and k."""
    hf, a = layer.hf, layer.layout.attention

    def normed(c, hf=hf):
        return c[f"{hf}.self_attn.q_norm"].flatten(2), c[f"{hf}.self_attn.k_norm"].flatten(2)

    layer.add_after("qkv", "qk_norm", [
        layer.probe(f"{a}.{x}_layernorm", f"{what} norm (RMSNorm of the {whats} before rotary)",
                    lambda c, i=i: normed(c)[i], combine="cat", reshape=_heads_flat)
        for i, (x, what, whats) in enumerate((("q", "query", "queries"), ("k", "key", "keys")))])
    layer.hf_query_key = normed
