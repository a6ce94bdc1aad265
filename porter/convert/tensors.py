"""HF weights <-> one full (unsharded) copy in the tree's layout, by pure tensor copies.

No arithmetic anywhere, so HF -> Megatron -> HF gives back the very same bits. The layout
(porter.convert.layout.WeightLayout) says where each tensor goes: the fused QKV projection
laid out per key/value group [ng, np/ng + 2, hn] (the per-head [np, 3, hn] when ng = np),
which half of the fused gate+up projection is the gate, the biases per site, the untied head.
HF names are the LLaMA family's (LLaMA, Mistral, Qwen2, Gemma share them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from porter.convert.shape import ModelShape
from porter.differences.moe import weights as experts
from porter.errors import PorterError
from porter.layout import WeightLayout


@dataclass
class MegatronWeights:
    """One full copy of the model in the tree's layout. Layer keys are relative to a layer."""

    shape: ModelShape
    embedding: torch.Tensor  # [padded vocab, h]
    layers: list[dict[str, torch.Tensor]]
    final_norm: torch.Tensor | None
    output: torch.Tensor | None  # [padded vocab, h]; None when tied
    extra: dict = field(default_factory=dict)


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t.clone()
    out = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype)
    out[: t.shape[0]] = t
    return out


def layer_names(layout: WeightLayout) -> dict[str, str]:
    """role -> key inside one transformer layer."""
    a, p = layout.attention, layout.mlp
    return {
        "input_norm": f"{layout.input_norm}.weight",
        "qkv": f"{a}.{layout.qkv}.weight",
        "qkv_bias": f"{a}.{layout.qkv}.bias",
        "dense": f"{a}.{layout.dense}.weight",
        "dense_bias": f"{a}.{layout.dense}.bias",
        "post_norm": f"{layout.post_attention_norm}.weight",
        "fc1": f"{p}.{layout.fc1}.weight",
        "fc1_bias": f"{p}.{layout.fc1}.bias",
        "up": f"{p}.{layout.up}.weight",
        "up_bias": f"{p}.{layout.up}.bias",
        "fc2": f"{p}.{layout.fc2}.weight",
        "fc2_bias": f"{p}.{layout.fc2}.bias",
    }


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """HF q [np*hn, ...], k and v [ng*hn, ...] -> fused [ng * (np/ng + 2) * hn, ...], per group."""
    rest = q.shape[1:]
    parts = [t.reshape(groups, -1, *rest) for t in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(-1, *rest).clone()


def split_qkv(qkv: torch.Tensor, shape: ModelShape) -> list[torch.Tensor]:
    """The fused per-group projection -> HF q, k, v."""
    rest = qkv.shape[1:]
    queries = shape.heads_per_group * shape.head_dim
    grouped = qkv.reshape(shape.num_query_groups, queries + 2 * shape.head_dim, *rest)
    q = grouped[:, :queries]
    k = grouped[:, queries: queries + shape.head_dim]
    v = grouped[:, queries + shape.head_dim:]
    return [t.reshape(-1, *rest).clone() for t in (q, k, v)]


def _gate_up(first: torch.Tensor, second: torch.Tensor, gate_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return (first, second) if gate_first else (second, first)


def _gate_and_up(names: dict, layout: WeightLayout, gate: torch.Tensor, up: torch.Tensor, suffix: str = "") -> dict:
    """HF's gate and up tensors in the tree's MLP: two projections, or one fused in the tree's half order."""
    if layout.up:
        return {names["fc1" + suffix]: gate.clone(), names["up" + suffix]: up.clone()}
    return {names["fc1" + suffix]: torch.cat(_gate_up(gate, up, layout.gate_first), dim=0)}


def _hf_gate_and_up(names: dict, layout: WeightLayout, layer: dict, ffn: int, suffix: str = "") -> tuple:
    """The tree's MLP input projection(s) -> HF's (gate, up)."""
    if layout.up:
        return layer[names["fc1" + suffix]].clone(), layer[names["up" + suffix]].clone()
    fused = layer[names["fc1" + suffix]]
    return _gate_up(fused[:ffn].clone(), fused[ffn:].clone(), layout.gate_first)


def rope_theta(config: dict) -> float:
    """The rotary base of an HF config (transformers 5 `rope_parameters`, or `rope_theta`)."""
    theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    return float(theta if theta is not None else 10000.0)


def rotary_inv_freq(dim: int, theta: float) -> torch.Tensor:
    """1 / theta^(2i / dim), i < dim / 2, in fp32: the frequencies a rotary embedding computes."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))


def hf_to_megatron(state: dict[str, torch.Tensor], config: dict, layout: WeightLayout,
                   tensor_parallel: int = 1) -> MegatronWeights:
    """An HF state dict + config -> one full copy in the tree's layout."""
    shape = ModelShape.from_hf(config)
    names = layer_names(layout)
    padded = layout.padded_vocab(shape.vocab_size, tensor_parallel)
    groups = shape.num_query_groups

    def take(key):
        if key not in state:
            raise PorterError(f"the HF checkpoint has no tensor {key}", construct=key,
                              found=f"{len(state)} tensors, e.g. {sorted(state)[:3]}",
                              fix="pass the directory of the spec's HF model (save_pretrained)")
        return state[key]

    layers = []
    for i in range(shape.num_layers):
        pre = f"model.layers.{i}."
        attn, mlp = pre + "self_attn.", pre + "mlp."
        layer = {
            names["input_norm"]: take(pre + "input_layernorm.weight").clone(),
            names["qkv"]: fuse_qkv(take(attn + "q_proj.weight"), take(attn + "k_proj.weight"),
                                   take(attn + "v_proj.weight"), groups),
            names["dense"]: take(attn + "o_proj.weight").clone(),
            names["post_norm"]: take(pre + "post_attention_layernorm.weight").clone(),
        }
        if layout.num_experts:  # DeepSpeed's MoE layer (porter/convert/experts.py)
            layer.update(experts.hf_to_layer(state, i, layout, shape.num_experts, take))
        else:
            layer.update(_gate_and_up(names, layout, take(mlp + "gate_proj.weight"), take(mlp + "up_proj.weight")))
            layer[names["fc2"]] = take(mlp + "down_proj.weight").clone()
        if layout.qkv_bias:
            layer[names["qkv_bias"]] = fuse_qkv(take(attn + "q_proj.bias"), take(attn + "k_proj.bias"),
                                                take(attn + "v_proj.bias"), groups)
        if layout.attention_output_bias:
            layer[names["dense_bias"]] = take(attn + "o_proj.bias").clone()
        if layout.mlp_bias:
            g, u = take(mlp + "gate_proj.bias"), take(mlp + "up_proj.bias")
            layer.update(_gate_and_up(names, layout, g, u, "_bias"))
            layer[names["fc2_bias"]] = take(mlp + "down_proj.bias").clone()
        for key in layout.rotary_buffers:  # the tree's rotary saves its frequencies: what it computes itself
            layer[key] = rotary_inv_freq(shape.head_dim, rope_theta(config))
        layers.append(layer)
    embedding = pad_rows(take("model.embed_tokens.weight"), padded)
    output = None
    if not layout.tied:
        head = state.get("lm_head.weight")
        if head is None and config.get("tie_word_embeddings"):
            head = state["model.embed_tokens.weight"]
        output = pad_rows(head if head is not None else take("lm_head.weight"), padded)
    return MegatronWeights(shape=shape, embedding=embedding, layers=layers,
                           final_norm=take("model.norm.weight").clone(), output=output)


def megatron_to_hf(weights: MegatronWeights, layout: WeightLayout) -> dict[str, torch.Tensor]:
    """One full copy in the tree's layout -> an HF state dict."""
    shape = weights.shape
    names = layer_names(layout)
    v, f = shape.vocab_size, shape.ffn_hidden_size
    state = {"model.embed_tokens.weight": weights.embedding[:v].clone()}
    for i, layer in enumerate(weights.layers):
        pre = f"model.layers.{i}."
        attn, mlp = pre + "self_attn.", pre + "mlp."
        q, k, vv = split_qkv(layer[names["qkv"]], shape)
        if layout.num_experts:
            state.update(experts.layer_to_hf(layer, i, layout, shape.num_experts, f))
        else:
            gate, up = _hf_gate_and_up(names, layout, layer, f)
            state.update({mlp + "gate_proj.weight": gate, mlp + "up_proj.weight": up,
                          mlp + "down_proj.weight": layer[names["fc2"]].clone()})
        state.update({
            pre + "input_layernorm.weight": layer[names["input_norm"]].clone(),
            attn + "q_proj.weight": q, attn + "k_proj.weight": k, attn + "v_proj.weight": vv,
            attn + "o_proj.weight": layer[names["dense"]].clone(),
            pre + "post_attention_layernorm.weight": layer[names["post_norm"]].clone(),
        })
        if names["qkv_bias"] in layer:
            qb, kb, vb = split_qkv(layer[names["qkv_bias"]], shape)
            state.update({attn + "q_proj.bias": qb, attn + "k_proj.bias": kb, attn + "v_proj.bias": vb})
        if names["dense_bias"] in layer:
            state[attn + "o_proj.bias"] = layer[names["dense_bias"]].clone()
        if names["fc1_bias"] in layer:
            gb, ub = _hf_gate_and_up(names, layout, layer, f, "_bias")
            state.update({mlp + "gate_proj.bias": gb, mlp + "up_proj.bias": ub,
                          mlp + "down_proj.bias": layer[names["fc2_bias"]].clone()})
    state["model.norm.weight"] = weights.final_norm.clone()
    if weights.output is not None:
        state["lm_head.weight"] = weights.output[:v].clone()
    return state
