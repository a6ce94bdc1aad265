"""Full weights <-> what each tensor-parallel rank holds.

Row-parallel tensors split by rows (the fused QKV projection's rows are whole key/value
groups, so each rank holds ng/p groups), column-parallel ones by columns, the fused gate+up
projection half by half (rank r holds [gate_r; up_r]); norms are replicated. Each layer
tensor's role is its Weight's (porter.weights); the functions work a tensor (or a layer) at a time.
"""

from __future__ import annotations

import torch

from porter.convert.tensors import MegatronWeights
from porter.errors import PorterError


def shard_pieces(t: torch.Tensor, how: str, tp: int, rank: int) -> tuple[torch.Tensor, ...]:
    """What rank `rank` of `tp` holds of a full tensor, as views of it whose rows, one piece after
    the other, are the rank's tensor (one piece, but for the fused gate+up halves)."""
    if how == "replicated" or tp == 1:
        return (t,)
    if how == "rows":
        return (t.chunk(tp, dim=0)[rank],)
    if how == "columns":
        return (t.chunk(tp, dim=1)[rank],)
    if how == "gate_up":  # full [A; B] -> rank r holds [A_r; B_r]
        first, second = t.chunk(2, dim=0)
        return first.chunk(tp, dim=0)[rank], second.chunk(tp, dim=0)[rank]
    raise ValueError(how)


def shard_tensor(t: torch.Tensor, how: str, tp: int, rank: int) -> torch.Tensor:
    """What rank `rank` of `tp` holds of a full tensor: a view of it, a copy only for the fused
    gate+up halves."""
    pieces = shard_pieces(t, how, tp, rank)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


def unshard_tensor(parts: list[torch.Tensor], how: str) -> torch.Tensor:
    """The full tensor from every rank's part, in rank order (rank 0's own where they are replicas)."""
    if how == "replicated" or len(parts) == 1:
        return parts[0]
    if how == "rows":
        return torch.cat(parts, dim=0)
    if how == "columns":
        return torch.cat(parts, dim=1)
    if how == "gate_up":
        halves = [p.chunk(2, dim=0) for p in parts]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    raise ValueError(how)


def check_divisible(shape, padded_vocab: int, tp: int) -> None:
    """Refuse a tensor-parallel size that does not divide what it splits."""
    for what, value in (("attention heads", shape.num_attention_heads),
                        ("key/value heads", shape.kv_heads),
                        ("ffn hidden size", shape.ffn_hidden_size),
                        ("padded vocabulary", padded_vocab)):
        if value % tp:
            raise PorterError(
                f"{what} ({value}) do not split over {tp} tensor-parallel ranks",
                construct=f"the tensor-parallel size dividing the {what}", found=f"{what} {value}, --tp {tp}",
                fix=f"choose a tensor-parallel size that divides {value}" + (
                    " (each rank holds whole key/value heads: porter, like Megatron, does not replicate them)"
                    if what == "key/value heads" else ""),
            )


def shard_layer(layer: dict[str, torch.Tensor], roles: dict[str, str], tp: int, rank: int,
                pieces: bool = False) -> dict:
    """What rank `rank` of `tp` holds of a full layer, each tensor by its role (`pieces`: each
    tensor as shard_pieces gives it)."""
    split = shard_pieces if pieces else shard_tensor
    return {k: split(v, roles[k], tp, rank) for k, v in layer.items()}


def shard(model: MegatronWeights, tp: int, rank: int) -> MegatronWeights:
    """What tensor-parallel rank `rank` of `tp` holds, in memory."""
    check_divisible(model.shape, model.embedding.shape[0], tp)
    return MegatronWeights(
        weights=model.weights,
        embedding=shard_tensor(model.embedding, "rows", tp, rank),
        layers=[shard_layer(layer, model.weights.roles(i), tp, rank) for i, layer in enumerate(model.layers)],
        final_norm=model.final_norm,
        output=None if model.output is None else shard_tensor(model.output, "rows", tp, rank),
    )
