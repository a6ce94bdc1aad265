"""The MoE difference's weight map: Mixtral's router and experts <-> DeepSpeed's MoE layer.

In the tree each layer's MLP is `deepspeed.moe.layer.MoE`: its router is
`<mlp>.deepspeed_moe.gate.wg` [experts, h] (HF's router `gate`), expert e is a ParallelMLP at
`<mlp>.deepspeed_moe.experts.deepspeed_experts.<e>.` with the fused gate+up projection
[2 * ffn, h] (gate first, as every ParallelMLP of the port) and the output projection [h, ffn].

HF spells the experts two ways, both read here:
- on disk (what `save_pretrained` writes, in transformers 4 and 5): per expert,
  `model.layers.<i>.block_sparse_moe.experts.<e>.w1/w3/w2.weight` (gate [ffn, h], up, down
  [h, ffn]) and the router `block_sparse_moe.gate.weight`; written back this way;
- in memory (transformers 5's fused state dict): `mlp.experts.gate_up_proj` [E, 2 * ffn, h]
  (gate first), `mlp.experts.down_proj` [E, h, ffn], the router `mlp.gate.weight`.

DeepSpeed checkpoints: the router stays in the model's own file; expert e of MoE layer L is a
file of its own, layer_<L>_expert_<e>_mp_rank_<MM>_model_states.pt, keyed by the expert's
module path in the model with its global id, whatever the expert-parallel size (each rank
loads the files of its own experts). Pure copies both ways: bit-exact.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from porter.errors import PorterError
from porter.layout import WeightLayout

MOE = "deepspeed_moe"
ROUTER = f"{MOE}.gate.wg.weight"
EXPERTS = f"{MOE}.experts.deepspeed_experts"
LANGUAGE_MODEL = "language_model"  # the generated model's attribute holding the language model
FILE = re.compile(r"layer_(\d+)_expert_(\d+)_mp_rank_(\d+)_model_states\.pt")


def router_key(layout: WeightLayout) -> str:
    """The router's key inside one transformer layer."""
    return f"{layout.mlp}.{ROUTER}"


def expert_keys(layout: WeightLayout, expert: int) -> tuple[str, str]:
    """(fused gate+up, output projection) keys of an expert inside one transformer layer."""
    base = f"{layout.mlp}.{EXPERTS}.{expert}"
    return f"{base}.{layout.fc1}.weight", f"{base}.{layout.fc2}.weight"


def layer_keys(layout: WeightLayout, count: int) -> set[str]:
    """Every key a sparse layer's MLP has, with `count` experts."""
    keys = {router_key(layout)}
    for expert in range(count):
        keys.update(expert_keys(layout, expert))
    return keys


def _fused(first: torch.Tensor, second: torch.Tensor, gate_first: bool) -> torch.Tensor:
    return torch.cat((first, second) if gate_first else (second, first), dim=0)


def hf_to_layer(state: dict[str, torch.Tensor], i: int, layout: WeightLayout, count: int,
                take) -> dict[str, torch.Tensor]:
    """One HF layer's router and `count` experts (either spelling) -> the layer's MoE tensors."""
    disk, memory = f"model.layers.{i}.block_sparse_moe.", f"model.layers.{i}.mlp."
    if not count:
        raise PorterError("the HF config has no experts for the port's MoE layers", construct="num_local_experts",
                          found="none", fix="convert a Mixtral model (its config.json carries num_local_experts)")
    out: dict[str, torch.Tensor] = {}
    if f"{memory}experts.gate_up_proj" in state:
        out[router_key(layout)] = take(f"{memory}gate.weight").clone()
        gate_up, down = take(f"{memory}experts.gate_up_proj"), take(f"{memory}experts.down_proj")
        if gate_up.shape[0] != count:
            raise _count_error(f"{memory}experts.gate_up_proj", gate_up.shape[0], count)
        for e in range(count):
            fc1, fc2 = expert_keys(layout, e)
            gate, up = gate_up[e].chunk(2, dim=0)
            out[fc1], out[fc2] = _fused(gate, up, layout.gate_first), down[e].clone()
        return out
    out[router_key(layout)] = take(f"{disk}gate.weight").clone()
    for e in range(count):
        fc1, fc2 = expert_keys(layout, e)
        expert = f"{disk}experts.{e}."
        out[fc1] = _fused(take(expert + "w1.weight"), take(expert + "w3.weight"), layout.gate_first)
        out[fc2] = take(expert + "w2.weight").clone()
    if f"{disk}experts.{count}.w1.weight" in state:
        raise _count_error(f"{disk}experts.{count}.w1.weight", "more", count)
    return out


def _count_error(key: str, found, count: int) -> PorterError:
    return PorterError(
        "the HF model's expert count differs from the config's", construct=key,
        found=f"{found} experts; num_local_experts = {count}",
        fix="pass the directory save_pretrained wrote (its config.json and weights together)",
    )


def layer_to_hf(layer: dict[str, torch.Tensor], i: int, layout: WeightLayout, count: int,
                ffn: int) -> dict[str, torch.Tensor]:
    """One layer's router and `count` experts -> HF's on-disk names (what save_pretrained writes)."""
    disk = f"model.layers.{i}.block_sparse_moe."
    out = {f"{disk}gate.weight": layer[router_key(layout)].clone()}
    for e in range(count):
        fc1, fc2 = expert_keys(layout, e)
        first, second = layer[fc1][:ffn].clone(), layer[fc1][ffn:].clone()
        gate, up = (first, second) if layout.gate_first else (second, first)
        out.update({f"{disk}experts.{e}.w1.weight": gate, f"{disk}experts.{e}.w3.weight": up,
                    f"{disk}experts.{e}.w2.weight": layer[fc2].clone()})
    return out


def module_prefix(layout: WeightLayout, i: int) -> str:
    """Layer i's path in the generated model, as DeepSpeed names expert files' keys."""
    return f"{LANGUAGE_MODEL}.{layout.encoder}.{layout.layers}.{i}."


def split_experts(layer: dict[str, torch.Tensor], i: int, moe_layer: int, layout: WeightLayout, count: int
                  ) -> tuple[dict[str, torch.Tensor], dict[tuple[int, int], dict[str, torch.Tensor]]]:
    """(layer i without its experts, {(MoE layer, expert): that expert's file}) for a checkpoint:
    the model's file keeps the router, every expert gets a file of its own (none for a dense layer)."""
    experts = {k: v for k, v in layer.items() if f".{EXPERTS}." in k}
    dense = {k: v for k, v in layer.items() if k not in experts}
    if not experts:
        return dense, {}
    files = {(moe_layer, e): {module_prefix(layout, i) + key: experts[key] for key in expert_keys(layout, e)}
             for e in range(count)}
    return dense, files


def expert_file(folder: Path, moe_layer: int, expert: int, mp_rank: int) -> Path:
    return Path(folder) / f"layer_{moe_layer}_expert_{expert}_mp_rank_{mp_rank:02d}_model_states.pt"


def expert_tensors(folder: Path, mp_rank: int, structure) -> tuple[dict[int, dict[str, tuple[Path, str]]], int]:
    """Where the experts of a checkpoint's files (one tensor-parallel rank's) are: ({layer: {key in
    the layer: (file, key in the file)}}, experts per layer (0: none)); `structure(path)` reads a
    file's keys (and nothing else)."""
    found: dict[int, set[int]] = {}
    places: dict[int, dict[str, tuple[Path, str]]] = {}
    for path in sorted(Path(folder).glob("layer_*_expert_*_mp_rank_*_model_states.pt")):
        match = FILE.fullmatch(path.name)
        if match is None or int(match.group(3)) != mp_rank:
            continue
        for key in structure(path):
            where = re.search(rf"\.{re.escape('layers')}\.(\d+)\.(.*)$", key)
            if where is None or f".{EXPERTS}." not in key:
                raise PorterError("an expert file holds a tensor porter cannot place", file=str(path), construct=key,
                                  found=key, fix="is this a checkpoint of the generated model with DeepSpeed's MoE layer?")
            layer, rest = int(where.group(1)), where.group(2)
            places.setdefault(layer, {})[rest] = (path, key)
            found.setdefault(layer, set()).add(int(match.group(2)))
    counts = {len(v) for v in found.values()}
    if len(counts) > 1:
        raise PorterError("the checkpoint's layers have different expert counts", file=str(folder),
                          construct="layer_<L>_expert_<e>_mp_rank_<MM>_model_states.pt for every expert of every layer",
                          found=str({k: len(v) for k, v in sorted(found.items())}),
                          fix="copy the whole checkpoint folder (some expert files are missing)")
    return places, (counts.pop() if counts else 0)


def check_engine(layout: WeightLayout, pipe: bool, tp: int) -> None:
    """A checkpoint with experts is the plain engine's, at a tensor-parallel size of 1."""
    if not layout.num_experts:
        return
    if pipe:
        raise PorterError(
            "the MoE model runs on DeepSpeed's plain engine, which writes no pipeline layer files",
            construct="--no-pipe (a checkpoint for --no-pipeline-parallel runs)", found="the pipeline engine's layout",
            fix="pass --no-pipe",
        )
    if tp != 1:
        raise PorterError(
            f"the MoE model's experts are whole ParallelMLPs: no tensor-parallel split (--tp {tp})",
            construct="--tp 1 (expert parallelism is a run-time choice: --moe-expert-parallel-size)",
            found=f"--tp {tp}", fix="pass --tp 1",
        )
