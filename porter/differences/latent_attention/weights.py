"""Multi-head latent attention's weights: HF's compressed and per-head projections in the tree.

The tree's LatentAttention (latent_attention.py here) names its modules as HF's DeepSeek
attention does: the query `q_proj` (or, with a compressed query, `q_a_proj` -> `q_a_layernorm`
-> `q_b_proj`), `kv_a_proj_with_mqa` (the latent and the shared rotary key) ->
`kv_a_layernorm` -> `kv_b_proj`; the output projection is the tree's `dense` (HF `o_proj`).
Tensor parallelism: the compressed projections and their norms are whole on every rank; the
per-head ones are split by heads (`q_proj`/`q_b_proj` and `kv_b_proj` by rows, a head's rows
together; `dense` by columns).

HF's DeepSeek rotates the rotary part of each query head and the shared rotary key in
interleaved pairs (x0, x1), (x2, x3), ... (`rope_interleave`, DeepSeek-V3's default and
DeepSeek-V2's only layout); the tree's rotary embedding pairs dimension i with i + d/2. The
rows that make those dimensions are reordered (even ones first, then odd ones) on the way in
and back on the way out: q . k is the same sum in either order, and both ways are pure copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.weights import LayerWeights, Weight

Q = "self_attn.q_proj.weight"
Q_A, Q_NORM, Q_B = "self_attn.q_a_proj.weight", "self_attn.q_a_layernorm.weight", "self_attn.q_b_proj.weight"
KV_A, KV_NORM, KV_B = ("self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_a_layernorm.weight",
                       "self_attn.kv_b_proj.weight")


def dims(config: dict) -> tuple[int, int, int, int | None]:
    """(qk_nope_head_dim, qk_rope_head_dim, kv_lora_rank, q_lora_rank) of an HF config."""
    return (int(config["qk_nope_head_dim"]), int(config["qk_rope_head_dim"]), int(config["kv_lora_rank"]),
            None if config.get("q_lora_rank") is None else int(config["q_lora_rank"]))


def interleaved(config: dict) -> bool:
    """Does HF rotate in interleaved pairs? DeepSeek-V3's `rope_interleave` (default true);
    DeepSeek-V2's class has no such field and always does."""
    return bool(config.get("rope_interleave", True))


def halves_order(rope: int) -> torch.Tensor:
    """The interleaved rotary dimensions' order in the tree: the even ones, then the odd ones."""
    import torch
    return torch.cat((torch.arange(0, rope, 2), torch.arange(1, rope, 2)))


def _reorder_tail(tensor: torch.Tensor, head: int, rope: int, order: torch.Tensor) -> torch.Tensor:
    """Rows [.., head) of every block of `head` rows: the last `rope` rows of each block reordered."""
    import torch
    rest = tensor.shape[1:]
    blocks = tensor.reshape(-1, head, *rest)
    tail = blocks[:, head - rope:].index_select(1, order)
    return torch.cat((blocks[:, :head - rope], tail), dim=1).reshape(tensor.shape)


def rope_rows(head: int, rope: int, on: bool):
    """(to the tree, back to HF) for a projection whose rows come in blocks of `head`, the last
    `rope` of each rotary; identities when HF's rotary is not interleaved."""
    import torch
    if not on:
        return None, None
    order = halves_order(rope)
    back = torch.argsort(order)
    return (lambda t: _reorder_tail(t[0], head, rope, order)), (lambda t: (_reorder_tail(t, head, rope, back),))


def latent_weights(layer: LayerWeights) -> None:
    """The fused q, k, v slot becomes the latent attention's projections and norms."""
    a = layer.layout.attention
    nope, rope, kv_rank, q_rank = dims(layer.config)
    on = interleaved(layer.config)
    to_tree, to_hf = rope_rows(nope + rope, rope, on)
    if q_rank is None:
        query = [Weight(f"{a}.q_proj.weight", (Q,), "rows", to_tree, to_hf)]
    else:
        query = [Weight(f"{a}.q_a_proj.weight", (Q_A,)), Weight(f"{a}.q_a_layernorm.weight", (Q_NORM,)),
                 Weight(f"{a}.q_b_proj.weight", (Q_B,), "rows", to_tree, to_hf)]
    latent_tree, latent_hf = rope_rows(kv_rank + rope, rope, on)
    layer.replace("qkv", [*query,
                          Weight(f"{a}.kv_a_proj_with_mqa.weight", (KV_A,), "replicated", latent_tree, latent_hf),
                          Weight(f"{a}.kv_a_layernorm.weight", (KV_NORM,)),
                          Weight(f"{a}.kv_b_proj.weight", (KV_B,), "rows")])
