"""The MoE difference's weights: the HF model's router and experts <-> DeepSpeed's MoE layer.

In the tree each MoE layer's MLP is `deepspeed.moe.layer.MoE`: its router is
`<mlp>.deepspeed_moe.gate.wg` [experts, h] (HF's router `gate`), expert e is a ParallelMLP at
`<mlp>.deepspeed_moe.experts.deepspeed_experts.<e>.` with the fused gate+up projection
[2 * ffn, h] (in the half order of the port's gated MLP) and the output projection [h, ffn].
The router is whole on every tensor-parallel rank; each expert is split over them as the
tree's ParallelMLP is (its gate+up halves by rows, its output projection by columns). A layer
the model keeps dense (Qwen3-MoE's mlp_only_layers, decoder_sparse_step) keeps the MLP's slots.

HF spells the experts two ways, both read here:
- on disk (what `save_pretrained` writes, in transformers 4 and 5): per expert, Mixtral's
  `model.layers.<i>.block_sparse_moe.experts.<e>.w1/w3/w2.weight` (gate [ffn, h], up, down
  [h, ffn]), Qwen3-MoE's `mlp.experts.<e>.gate_proj/up_proj/down_proj.weight` (hf.py: each
  model type's names), and the router `<block>.gate.weight`; written back this way;
- in memory (transformers 5's fused state dict): `mlp.experts.gate_up_proj` [E, 2 * ffn, h]
  (gate first), `mlp.experts.down_proj` [E, h, ffn], the router `mlp.gate.weight`.

DeepSpeed checkpoints: the router stays in the model's own file; expert e of MoE layer L is a
file of its own, layer_<L>_expert_<e>_mp_rank_<MM>_model_states.pt (L counts the MoE layers
only), keyed by the expert's module path in the model with its global id, whatever the
expert-parallel size (each rank loads the files of its own experts). Pure copies both ways:
bit-exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import os

if TYPE_CHECKING:
    import torch

from porter.differences.moe.hf import fields_of
from porter.errors import PorterError
from porter.weights import LayerWeights, ModelWeights, Weight

MOE = "deepspeed_moe"
ROUTER = f"{MOE}.gate.wg.weight"
EXPERTS = f"{MOE}.experts.deepspeed_experts"
LANGUAGE_MODEL = "language_model"  # the generated model's attribute holding the language model
MEMORY = "mlp"  # transformers 5's MoE block in memory


def experts_of(config: dict) -> int:
    count = fields_of(config.get("model_type")).experts(config)
    if not count:
        raise PorterError("the HF config has no experts for the port's MoE layers", construct="num_local_experts",
                          found="none", fix="convert a mixture of experts (its config.json carries its expert count)")
    return int(count)


def sparse_layers(config: dict, num_layers: int) -> list[bool]:
    """Which layers of an HF model have experts, as transformers builds them (Qwen3-MoE's decoder
    layer: not in mlp_only_layers, and (index + 1) % decoder_sparse_step == 0; DeepSeek's: from
    first_k_dense_replace on)."""
    fields = fields_of(config.get("model_type"))
    step = fields.read(config, fields.interval) or 1
    dense = fields.dense_of(config)
    return [i not in dense and (i + 1) % step == 0 for i in range(num_layers)]


def expert_file(moe_layer: int, expert: int, mp_rank: int) -> str:
    return f"layer_{moe_layer}_expert_{expert}_mp_rank_{mp_rank:02d}_model_states.pt"


def module_prefix(layer: LayerWeights) -> str:
    """The layer's path in the generated model, as DeepSpeed names the keys of expert files."""
    layout = layer.layout
    return f"{LANGUAGE_MODEL}.{layout.encoder}.{layout.layers}.{layer.index}."


def expert_weights(layer: LayerWeights) -> None:
    """In a layer with experts, the MLP slots become the router and the experts, each expert in a
    file of its own."""
    if not sparse_layers(layer.config, layer.shape.num_layers)[layer.index]:
        return
    layout, m, count = layer.layout, layer.layout.mlp, experts_of(layer.config)
    block, gate, up, down = fields_of(layer.config.get("model_type")).disk
    names = layer.hf_names
    spelled = f"model.layers.{layer.index}."
    memory = names is not None and f"{spelled}{MEMORY}.experts.gate_up_proj" in names
    if names is not None and not memory and f"{spelled}{block}.experts.{count}.{gate}.weight" in names:
        raise _count_error(f"{spelled}{block}.experts.{count}.{gate}.weight", "more", count)
    first = layout.gate_first
    prefix = module_prefix(layer)
    experts = []
    for e in range(count):
        fc1 = f"{m}.{EXPERTS}.{e}.{layout.fc1}.weight"
        fc2 = f"{m}.{EXPERTS}.{e}.{layout.fc2}.weight"
        if memory:
            experts += [
                Weight(fc1, (f"{MEMORY}.experts.gate_up_proj",), "gate_up", file=_placed(prefix + fc1, e),
                       join=lambda t, e=e: _fused_from_memory(t[0], e, count, first)),
                Weight(fc2, (f"{MEMORY}.experts.down_proj",), "columns", file=_placed(prefix + fc2, e),
                       join=lambda t, e=e: _expert(t[0], e, count))]
        else:
            on_disk = f"{block}.experts.{e}."
            experts += [
                Weight(fc1, (f"{on_disk}{gate}.weight", f"{on_disk}{up}.weight"), "gate_up",
                       file=_placed(prefix + fc1, e), join=lambda t: tuple(t if first else t[::-1]),  # pieces: the halves in order
                       split=lambda fused: fused.chunk(2, dim=0)[::1 if first else -1]),
                Weight(fc2, (f"{on_disk}{down}.weight",), "columns", file=_placed(prefix + fc2, e))]
    layer.replace("mlp_in", [Weight(f"{m}.{ROUTER}", (f"{MEMORY if memory else block}.gate.weight",))])
    layer.replace("mlp_out", experts)


def _placed(key: str, expert: int):
    """Expert `expert`'s tensor in its own file: (layer, MoE layer, rank) -> (file name, key in it)."""
    return lambda i, moe_layer, rank: (expert_file(moe_layer, expert, rank), key)


def _expert(fused: torch.Tensor, e: int, count: int) -> torch.Tensor:
    if fused.shape[0] != count:
        raise _count_error("mlp.experts (transformers 5's fused experts)", fused.shape[0], count)
    return fused[e]


def _fused_from_memory(gate_up: torch.Tensor, e: int, count: int, gate_first: bool):
    """Expert e of transformers 5's [E, 2 * ffn, h] (gate first), in the port's half order."""
    fused = _expert(gate_up, e, count)
    if gate_first:
        return fused
    gate, up = fused.chunk(2, dim=0)
    return up, gate  # pieces: the halves in the port's order


def _count_error(key: str, found, count: int) -> PorterError:
    return PorterError(
        "the HF model's expert count differs from the config's", construct=key,
        found=f"{found} experts; the config's count = {count}",
        fix="pass the directory save_pretrained wrote (its config.json and weights together)",
    )


def client_state(weights: ModelWeights) -> dict:
    """DeepSpeed's engine lists the expert count of each of its MoE layers."""
    sparse = sparse_layers(weights.config, weights.shape.num_layers)
    return {"num_experts": [experts_of(weights.config)] * sum(sparse)}


def check_engine(pipe: bool) -> None:
    """A checkpoint with experts is the plain engine's."""
    if pipe:
        raise PorterError(
            "the MoE model runs on DeepSpeed's plain engine, which writes no pipeline layer files",
            construct="--no-pipe (a checkpoint for --no-pipeline-parallel runs)", found="the pipeline engine's layout",
            fix="pass --no-pipe",
        )


# -- inside the tree (verify's worker): what DeepSpeed loads into this rank's experts -------------


def rank_experts(model, folder, tp_rank: int) -> dict[str, torch.Tensor]:
    """This rank's experts as DeepSpeed loads them: the file of each of its experts (by global
    id) in MoE-layer order, keyed by module path with the local id (expert parallelism)."""
    import torch
    try:
        from deepspeed.moe.layer import MoE
        from deepspeed.utils import groups
    except ImportError:
        return {}
    found: dict[str, torch.Tensor] = {}
    moe_layer = 0
    for _, module in model.named_modules():
        if not isinstance(module, MoE):
            continue
        rank = groups._get_expert_parallel_rank(module.expert_group_name)
        for local in range(module.num_local_experts):
            expert = rank * module.num_local_experts + local
            path = os.path.join(folder, expert_file(moe_layer, expert, tp_rank))
            if os.path.exists(path):
                for key, tensor in torch.load(path, map_location="cpu", weights_only=False).items():
                    found[key.replace(f"deepspeed_experts.{expert}.", f"deepspeed_experts.{local}.")] = tensor
        moe_layer += 1
    return found
