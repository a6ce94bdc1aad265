"""The weights and probes of a tree's GQA that projects q and (k, v) apart (apart.py): the query
projection is HF's q_proj as it is; the key/value one holds HF's k_proj and v_proj per key/value
head, [ng, 2, hn] (head g's key rows, then its value rows), so a row split keeps whole heads on
a rank. Only where the model has fewer key/value heads than query heads: with as many, the
tree builds the fused projection, which the base slots describe."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

from porter.probe import LayerProbes
from porter.weights import LayerWeights, Weight


def fuse_kv(k: Tensor, v: Tensor, kv_heads: int) -> tuple[Tensor, ...]:
    """HF k and v [ng*hn, ...] -> [ng * 2 * hn, ...] per key/value head, as pieces (views)."""
    rest = k.shape[1:]
    k, v = (t.reshape(kv_heads, -1, *rest) for t in (k, v))
    return tuple(part[g] for g in range(kv_heads) for part in (k, v))


def split_kv(kv: Tensor, kv_heads: int) -> list[Tensor]:
    """The per-key/value-head projection -> HF k, v."""
    rest = kv.shape[1:]
    grouped = kv.reshape(kv_heads, 2, -1, *rest)
    return [grouped[:, 0].reshape(-1, *rest), grouped[:, 1].reshape(-1, *rest)]


def apart_weights(layer: LayerWeights) -> None:
    layout, shape = layer.layout, layer.shape
    if not layout.gqa_key_value or shape.kv_heads == shape.num_attention_heads:
        return
    a, groups = layout.attention, shape.kv_heads
    layer.replace("qkv", [
        Weight(f"{a}.{layout.gqa_query}.weight", ("self_attn.q_proj.weight",), "rows"),
        Weight(f"{a}.{layout.gqa_key_value}.weight", ("self_attn.k_proj.weight", "self_attn.v_proj.weight"), "rows",
               join=lambda t: fuse_kv(*t, groups), split=lambda t: split_kv(t, groups)),
    ])


def apart_probes(layer: LayerProbes) -> None:
    layout = layer.layout
    groups = layer.config.get("num_key_value_heads") or layer.num_heads
    if not layout.gqa_key_value or groups == layer.num_heads:
        return

    def key_value(c, hf=layer.hf):
        """HF's k and v per key/value head: [b, s, ng, 2 * hn] flattened."""
        import torch
        k, v = c[f"{hf}.self_attn.k_proj"], c[f"{hf}.self_attn.v_proj"]
        b, s = k.shape[:2]
        return torch.cat([t.reshape(b, s, groups, -1) for t in (k, v)], dim=3).reshape(b, s, -1)

    a = layout.attention
    layer.replace("qkv", [
        layer.probe(f"{a}.{layout.gqa_query}", "query projection", layer.ref("self_attn.q_proj"), take="output+bias",
                    combine="cat"),
        layer.probe(f"{a}.{layout.gqa_key_value}", "key and value projection (per key/value head [ng, 2, hn])",
                    key_value, take="output+bias", combine="cat"),
    ])
