"""Full weights <-> what each tensor-parallel rank holds.

Row-parallel tensors split by rows (the fused QKV projection's rows are whole key/value
groups, so each rank holds ng/p groups), column-parallel ones by columns, the fused gate+up
projection half by half (rank r holds [gate_r; up_r]); norms are replicated. `_roles` is
the one place the roles come from; the functions work a tensor (or a layer) at a time.
"""

from __future__ import annotations

import torch

from porter.convert import experts
from porter.convert.layout import WeightLayout
from porter.convert.pieces import joined, rows, rows_between
from porter.convert.tensors import MegatronWeights, layer_names
from porter.errors import PorterError


def _roles(layout: WeightLayout) -> dict[str, str]:
    """layer key -> how it is split over tensor-parallel ranks."""
    names = layer_names(layout)
    return {
        names["input_norm"]: "replicated", names["post_norm"]: "replicated",
        names["qkv"]: "rows", names["qkv_bias"]: "rows",
        names["dense"]: "columns", names["dense_bias"]: "replicated",
        names["fc1"]: "rows" if layout.up else "gate_up", names["fc1_bias"]: "rows" if layout.up else "gate_up",
        names["up"]: "rows", names["up_bias"]: "rows",
        names["fc2"]: "columns", names["fc2_bias"]: "replicated",
        **{key: "replicated" for key in layout.rotary_buffers},
    }


def _role(roles: dict[str, str], key: str) -> str:
    """How a layer tensor splits; the MoE layer's router and experts are whole on every rank
    (convert refuses --tp > 1 with experts)."""
    return "replicated" if key not in roles and experts.MOE in key else roles[key]


def shard_pieces(t, how: str, tp: int, rank: int) -> tuple[torch.Tensor, ...]:
    """What rank `rank` of `tp` holds of a full tensor (or of its pieces: porter/convert/pieces.py),
    as pieces: views, whose rows one after the other are the rank's tensor."""
    if how == "replicated" or tp == 1:
        return t if isinstance(t, tuple) else (t,)
    count = rows(t)
    if how == "rows":
        return rows_between(t, rank * count // tp, (rank + 1) * count // tp)
    if how == "columns":
        return (joined(t).chunk(tp, dim=1)[rank],)
    if how == "gate_up":  # full [A; B] -> rank r holds [A_r; B_r]
        half = count // 2
        return rows_between(t, rank * half // tp, (rank + 1) * half // tp) + \
            rows_between(t, half + rank * half // tp, half + (rank + 1) * half // tp)
    raise ValueError(how)


def shard_tensor(t, how: str, tp: int, rank: int) -> torch.Tensor:
    """What rank `rank` of `tp` holds of a full tensor: a view of it, a copy only where its rows
    come from several pieces."""
    return joined(shard_pieces(t, how, tp, rank))


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
                        ("key/value heads", shape.num_query_groups),
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


def shard_layer(layer: dict[str, torch.Tensor], layout: WeightLayout, tp: int, rank: int,
                roles: dict[str, str] | None = None, pieces: bool = False) -> dict:
    """What rank `rank` of `tp` holds of a full layer (`pieces`: each tensor as shard_pieces gives it)."""
    roles = roles if roles is not None else _roles(layout)
    split = shard_pieces if pieces else shard_tensor
    return {k: split(v, _role(roles, k), tp, rank) for k, v in layer.items()}


def shard(weights: MegatronWeights, layout: WeightLayout, tp: int, rank: int) -> MegatronWeights:
    """What tensor-parallel rank `rank` of `tp` holds, in memory."""
    check_divisible(weights.shape, weights.embedding.shape[0], tp)
    roles = _roles(layout)
    return MegatronWeights(
        shape=weights.shape,
        embedding=shard_tensor(weights.embedding, "rows", tp, rank),
        layers=[shard_layer(layer, layout, tp, rank, roles) for layer in weights.layers],
        final_norm=weights.final_norm,
        output=None if weights.output is None else shard_tensor(weights.output, "rows", tp, rank),
    )
