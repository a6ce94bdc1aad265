"""What verify compares for the query/key norm: q and k right after their norms."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.probe import LayerProbes


def _heads_flat(value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The tree's q or k [s, b, heads, hn] -> [s, b, heads * hn]: ranks' heads join on the last dim."""
    return value.flatten(2)


def _one_per_group(per_group: int):
    """The tree's k [s, b, np, hn] repeated per query head before its norm (a tree whose own GQA
    repeats the keys where it projects them) -> its key heads [s, b, ng * hn]: the first of each
    group's np/ng copies (the others are copies of it)."""
    def reshape(value: torch.Tensor, batch_size: int) -> torch.Tensor:
        return value[:, :, ::per_group].flatten(2)
    return reshape


def _by_position(value: torch.Tensor, seq: int) -> torch.Tensor:
    """HF's normed q or k as [b, s, ...]: Qwen3 normalises [b, s, heads, hn] (before its transpose),
    Gemma-3 [b, heads, s, hn] (after it); the whole projection (OLMo-2) is [b, s, heads * hn]."""
    if value.dim() == 4 and value.shape[1] != seq and value.shape[2] == seq:
        return value.transpose(1, 2)
    return value


def add_qk_norm_probes(layer: LayerProbes) -> None:
    """After the q, k, v projection: q and k normalised, [b, s, heads * hn] (HF's q_norm and
    k_norm outputs, per head [b, s, heads, hn] or whole [b, s, heads * hn]); and rotary then
    rotates HF's normalised q and k."""
    hf, a = layer.hf, layer.layout.attention

    def normed(c, hf=hf):
        seq = c[f"{hf}.self_attn.q_proj"].shape[1]
        return tuple(_by_position(c[f"{hf}.self_attn.{x}_norm"], seq).flatten(2) for x in "qk")

    groups = layer.config.get("num_key_value_heads") or layer.num_heads
    repeated = layer.layout.gqa_keys_repeated and groups != layer.num_heads
    keys = _one_per_group(layer.num_heads // groups) if repeated else _heads_flat
    layer.add_after("qkv", "qk_norm", [
        layer.probe(f"{a}.{x}_layernorm", f"{what} norm (RMSNorm of the {whats} before rotary)",
                    lambda c, i=i: normed(c)[i], combine="cat", reshape=reshape)
        for i, (x, what, whats, reshape) in enumerate((("q", "query", "queries", _heads_flat),
                                                        ("k", "key", "keys", keys)))])
    layer.hf_query_key = normed
