"""Full weights <-> what each tensor-parallel rank holds.

Row-parallel tensors split by rows (the fused QKV projection's rows are whole key/value
groups, so each rank holds ng/p groups), column-parallel ones by columns, the fused gate+up
projection half by half (rank r holds [gate_r; up_r]); norms are replicated.
"""

from __future__ import annotations

import torch

from porter.convert.tensors import MegatronWeights, layer_names
from porter.differences.moe import weights as experts
from porter.errors import PorterError
from porter.layout import WeightLayout


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


def _shard(t: torch.Tensor, how: str, tp: int, rank: int) -> torch.Tensor:
    if how == "replicated" or tp == 1:
        return t.clone()
    if how == "rows":
        return t.chunk(tp, dim=0)[rank].clone()
    if how == "columns":
        return t.chunk(tp, dim=1)[rank].clone()
    if how == "gate_up":  # full [A; B] -> rank r holds [A_r; B_r]
        first, second = t.chunk(2, dim=0)
        return torch.cat((first.chunk(tp, dim=0)[rank], second.chunk(tp, dim=0)[rank]), dim=0)
    raise ValueError(how)


def _unshard(parts: list[torch.Tensor], how: str) -> torch.Tensor:
    if how == "replicated" or len(parts) == 1:
        return parts[0].clone()
    if how == "rows":
        return torch.cat(parts, dim=0)
    if how == "columns":
        return torch.cat(parts, dim=1)
    if how == "gate_up":
        halves = [p.chunk(2, dim=0) for p in parts]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    raise ValueError(how)


def _check_divisible(weights: MegatronWeights, tp: int) -> None:
    shape = weights.shape
    for what, value in (("attention heads", shape.num_attention_heads),
                        ("key/value heads", shape.num_query_groups),
                        ("ffn hidden size", shape.ffn_hidden_size),
                        ("padded vocabulary", weights.embedding.shape[0])):
        if value % tp:
            raise PorterError(
                f"{what} ({value}) do not split over {tp} tensor-parallel ranks",
                construct=f"the tensor-parallel size dividing the {what}", found=f"{what} {value}, --tp {tp}",
                fix=f"choose a tensor-parallel size that divides {value}" + (
                    " (each rank holds whole key/value heads: porter, like Megatron, does not replicate them)"
                    if what == "key/value heads" else ""),
            )


def shard(weights: MegatronWeights, layout: WeightLayout, tp: int, rank: int) -> MegatronWeights:
    """What tensor-parallel rank `rank` of `tp` holds."""
    _check_divisible(weights, tp)
    roles = _roles(layout)
    return MegatronWeights(
        shape=weights.shape,
        embedding=_shard(weights.embedding, "rows", tp, rank),
        layers=[{k: _shard(v, _role(roles, k), tp, rank) for k, v in layer.items()} for layer in weights.layers],
        final_norm=None if weights.final_norm is None else weights.final_norm.clone(),
        output=None if weights.output is None else _shard(weights.output, "rows", tp, rank),
    )


def unshard(parts: list[MegatronWeights], layout: WeightLayout) -> MegatronWeights:
    """The full copy from the shards of every tensor-parallel rank, in rank order."""
    roles = _roles(layout)
    first = parts[0]
    return MegatronWeights(
        shape=first.shape,
        embedding=_unshard([p.embedding for p in parts], "rows"),
        layers=[{k: _unshard([p.layers[i][k] for p in parts], _role(roles, k)) for k in layer}
                for i, layer in enumerate(first.layers)],
        final_norm=None if first.final_norm is None else first.final_norm.clone(),
        output=None if first.output is None else _unshard([p.output for p in parts], "rows"),
    )


