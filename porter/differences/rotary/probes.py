"""What verify compares for rotary position embeddings: q and k after the rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.probe import LayerProbes

QUERY_KEY = "porter.differences.rotary.probes:query_key"


def query_key(module, args, output) -> torch.Tensor:
    """The tree's rotary embedding returns (query [s, b, np, hn], key [s, b, ng, hn]): heads side by side."""
    import torch
    return torch.cat([t for t in output[:2]], dim=-2)


def add_rotary_probe(layer: LayerProbes) -> None:
    """After the q, k, v projection: q and k rotated, [b, s, np + ng, hn] (HF's apply_rotary_pos_emb
    on its own q, k as they enter it (layer.hf_query_key), with its rotary embedding's cos and sin)."""
    import torch
    heads = layer.num_heads

    def rotated(c):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        q, k = layer.hf_query_key(c)  # read when compared: a later difference may change them
        b, s = q.shape[:2]
        head_dim = q.shape[-1] // heads
        q, k = (t.reshape(b, s, -1, head_dim).transpose(1, 2) for t in (q, k))
        # the angles this layer's attention was given (Gemma-3: its layer type's), else the model's one table
        given = f"{layer.hf}.self_attn:position_embeddings"
        cos, sin = c[given] if given in c else c["model.rotary_emb"]
        # the first cos.shape[-1] channels rotate, the rest pass on (partial rotary: transformers'
        # rotary table is int(head_dim x partial_rotary_factor) wide)
        dim = cos.shape[-1]
        (q, q_pass), (k, k_pass) = ((t[..., :dim], t[..., dim:]) for t in (q, k))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k = torch.cat((q, q_pass), dim=-1), torch.cat((k, k_pass), dim=-1)
        return torch.cat((q.transpose(1, 2), k.transpose(1, 2)), dim=2)

    path = f"{layer.layout.attention}.{layer.layout.rotary}"
    layer.add_after("qkv", "rotary", [layer.probe(path, "rotary position embedding of q and k", rotated,
                                                  take=QUERY_KEY, combine="query_key", heads=heads)])
