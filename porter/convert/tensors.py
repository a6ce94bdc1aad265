"""HF weights <-> the tree's layout (full, unsharded), one layer at a time, by pure tensor copies.

No arithmetic anywhere, so HF -> Megatron -> HF gives back the very same bits. The layout
(porter.convert.layout.WeightLayout) says where each tensor goes: the fused QKV projection
laid out per key/value group [ng, np/ng + 2, hn] (the per-head [np, 3, hn] when ng = np),
which half of the fused gate+up projection is the gate, the biases per site, the untied head.
HF names are the LLaMA family's (LLaMA, Mistral, Qwen2, Gemma share them).

The mapping is one function per direction for a transformer layer (`hf_layer_to_megatron`,
`megatron_layer_to_hf`) and small ones for the embedding, the final norm and the head. The
model is a stream of parts, in order: ("embedding", None, t), ("layer", i, {key: t}) for each
layer, ("final_norm", None, t), ("output", None, t or None); the conversions stream it part by
part (`hf_parts`, `hf_tensors`), so that no more than one layer is held at a time. A tensor is
copied only where its layout changes and the change is more than an order of rows (a split
of q, k and v, padding rows): a fusion of rows is its pieces in order (porter/convert/pieces.py),
and the rest are the very tensors read (views, mapped from the file), written out as they are. Every function also runs
on tensors of the meta device: that is how a conversion plans its files before reading a byte.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field

import torch

from porter.convert import experts
from porter.convert.layout import WeightLayout
from porter.convert.pieces import first_rows, joined
from porter.convert.shape import ModelShape
from porter.errors import PorterError

Part = tuple  # (kind, layer index or None, tensor / {key: tensor} / None)


class Take:
    """HF tensors by name, each read when asked; `name in take` says whether the model has it."""

    def __init__(self, names: Container[str], read: Callable[[str], torch.Tensor], count: int | None = None) -> None:
        self.names = names
        self.read = read
        self.count = count

    @classmethod
    def of(cls, state: dict[str, torch.Tensor]) -> Take:
        return cls(state, state.__getitem__, len(state))

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            some = sorted(self.names)[:3] if isinstance(self.names, (dict, set, frozenset)) else []
            raise PorterError(f"the HF checkpoint has no tensor {name}", construct=name,
                              found=f"{self.count} tensors" + (f", e.g. {some}" if some else ""),
                              fix="pass the directory of the spec's HF model (save_pretrained)")
        return self.read(name)


@dataclass
class MegatronWeights:
    """One full copy of the model in the tree's layout, in memory. Layer keys are relative to a layer."""

    shape: ModelShape
    embedding: torch.Tensor  # [padded vocab, h]
    layers: list[dict[str, torch.Tensor]]
    final_norm: torch.Tensor | None
    output: torch.Tensor | None  # [padded vocab, h]; None when tied
    extra: dict = field(default_factory=dict)

    def parts(self) -> Iterator[Part]:
        yield "embedding", None, self.embedding
        for i, layer in enumerate(self.layers):
            yield "layer", i, layer
        yield "final_norm", None, self.final_norm
        yield "output", None, self.output

    @classmethod
    def collect(cls, parts: Iterator[Part], shape: ModelShape, extra: dict | None = None) -> MegatronWeights:
        found: dict = {"layers": []}
        for kind, _, value in parts:
            if kind == "layer":
                found["layers"].append({k: joined(v) for k, v in value.items()})
            else:
                found[kind] = None if value is None else joined(value)
        return cls(shape=shape, embedding=found["embedding"], layers=found["layers"],
                   final_norm=found.get("final_norm"), output=found.get("output"), extra=extra or {})


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """t with zero rows below, `rows` in all (t itself when it has them)."""
    if t.shape[0] == rows:
        return t
    out = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)
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


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> tuple:
    """HF q [np*hn, ...], k and v [ng*hn, ...] -> fused [ng * (np/ng + 2) * hn, ...], per group:
    as pieces (porter/convert/pieces.py), group g's q, k and v rows."""
    rest = q.shape[1:]
    q, k, v = (t.reshape(groups, -1, *rest) for t in (q, k, v))
    return tuple(part[g] for g in range(groups) for part in (q, k, v))


def split_qkv(qkv: torch.Tensor, shape: ModelShape) -> list[torch.Tensor]:
    """The fused per-group projection -> HF q, k, v (copied only where the groups interleave)."""
    rest = qkv.shape[1:]
    queries = shape.heads_per_group * shape.head_dim
    grouped = qkv.reshape(shape.num_query_groups, queries + 2 * shape.head_dim, *rest)
    q = grouped[:, :queries]
    k = grouped[:, queries: queries + shape.head_dim]
    v = grouped[:, queries + shape.head_dim:]
    return [t.reshape(-1, *rest) for t in (q, k, v)]


def _gate_up(first: torch.Tensor, second: torch.Tensor, gate_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return (first, second) if gate_first else (second, first)


def _gate_and_up(names: dict, layout: WeightLayout, gate: torch.Tensor, up: torch.Tensor, suffix: str = "") -> dict:
    """HF's gate and up tensors in the tree's MLP: two projections, or one fused in the tree's half order."""
    if layout.up:
        return {names["fc1" + suffix]: gate, names["up" + suffix]: up}
    return {names["fc1" + suffix]: _gate_up(gate, up, layout.gate_first)}  # pieces: the halves in order


def _hf_gate_and_up(names: dict, layout: WeightLayout, layer: dict, ffn: int, suffix: str = "") -> tuple:
    """The tree's MLP input projection(s) -> HF's (gate, up)."""
    if layout.up:
        return layer[names["fc1" + suffix]], layer[names["up" + suffix]]
    fused = layer[names["fc1" + suffix]]
    return _gate_up(fused[:ffn], fused[ffn:], layout.gate_first)


def rope_theta(config: dict) -> float:
    """The rotary base of an HF config (transformers 5 `rope_parameters`, or `rope_theta`)."""
    theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    return float(theta if theta is not None else 10000.0)


def rotary_inv_freq(dim: int, theta: float) -> torch.Tensor:
    """1 / theta^(2i / dim), i < dim / 2, in fp32: the frequencies a rotary embedding computes."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))


# -- HF -> the tree's layout ---------------------------------------------------------------------


def hf_layer_to_megatron(take: Take, i: int, shape: ModelShape, layout: WeightLayout,
                         config: dict) -> dict[str, torch.Tensor]:
    """HF layer i (its tensors read through take) -> the tree's layer i, keys relative to the layer."""
    names = layer_names(layout)
    groups = shape.num_query_groups
    pre = f"model.layers.{i}."
    attn, mlp = pre + "self_attn.", pre + "mlp."
    layer = {
        names["input_norm"]: take(pre + "input_layernorm.weight"),
        names["qkv"]: fuse_qkv(take(attn + "q_proj.weight"), take(attn + "k_proj.weight"),
                               take(attn + "v_proj.weight"), groups),
        names["dense"]: take(attn + "o_proj.weight"),
        names["post_norm"]: take(pre + "post_attention_layernorm.weight"),
    }
    if layout.num_experts:  # DeepSpeed's MoE layer (porter/convert/experts.py)
        layer.update(experts.hf_to_layer(take, i, layout, shape.num_experts, take))
    else:
        layer.update(_gate_and_up(names, layout, take(mlp + "gate_proj.weight"), take(mlp + "up_proj.weight")))
        layer[names["fc2"]] = take(mlp + "down_proj.weight")
    if layout.qkv_bias:
        layer[names["qkv_bias"]] = fuse_qkv(take(attn + "q_proj.bias"), take(attn + "k_proj.bias"),
                                            take(attn + "v_proj.bias"), groups)
    if layout.attention_output_bias:
        layer[names["dense_bias"]] = take(attn + "o_proj.bias")
    if layout.mlp_bias:
        g, u = take(mlp + "gate_proj.bias"), take(mlp + "up_proj.bias")
        layer.update(_gate_and_up(names, layout, g, u, "_bias"))
        layer[names["fc2_bias"]] = take(mlp + "down_proj.bias")
    for key in layout.rotary_buffers:  # the tree's rotary saves its frequencies: what it computes itself
        layer[key] = rotary_inv_freq(shape.head_dim, rope_theta(config))
    return layer


def hf_embedding_to_megatron(take: Take, padded: int) -> torch.Tensor:
    return pad_rows(take("model.embed_tokens.weight"), padded)


def hf_final_norm_to_megatron(take: Take) -> torch.Tensor:
    return take("model.norm.weight")


def hf_head_to_megatron(take: Take, config: dict, layout: WeightLayout, padded: int) -> torch.Tensor | None:
    """The untied head, padded (None when the tree ties it to the embedding)."""
    if layout.tied:
        return None
    if "lm_head.weight" not in take and config.get("tie_word_embeddings"):
        return pad_rows(take("model.embed_tokens.weight"), padded)
    return pad_rows(take("lm_head.weight"), padded)


def hf_parts(take: Take, config: dict, layout: WeightLayout, tensor_parallel: int = 1) -> Iterator[Part]:
    """An HF model (its tensors read through take) -> the tree's full layout, part by part."""
    shape = ModelShape.from_hf(config)
    padded = layout.padded_vocab(shape.vocab_size, tensor_parallel)
    yield "embedding", None, hf_embedding_to_megatron(take, padded)
    for i in range(shape.num_layers):
        yield "layer", i, hf_layer_to_megatron(take, i, shape, layout, config)
    yield "final_norm", None, hf_final_norm_to_megatron(take)
    yield "output", None, hf_head_to_megatron(take, config, layout, padded)


def hf_to_megatron(state: dict[str, torch.Tensor], config: dict, layout: WeightLayout,
                   tensor_parallel: int = 1) -> MegatronWeights:
    """An HF state dict + config -> one full copy in the tree's layout, in memory."""
    return MegatronWeights.collect(hf_parts(Take.of(state), config, layout, tensor_parallel),
                                   ModelShape.from_hf(config))


# -- the tree's layout -> HF ---------------------------------------------------------------------


def megatron_layer_to_hf(layer: dict[str, torch.Tensor], i: int, shape: ModelShape,
                         layout: WeightLayout) -> dict[str, torch.Tensor]:
    """The tree's layer i (keys relative to the layer) -> HF's tensors of layer i."""
    names = layer_names(layout)
    f = shape.ffn_hidden_size
    pre = f"model.layers.{i}."
    attn, mlp = pre + "self_attn.", pre + "mlp."
    q, k, v = split_qkv(layer[names["qkv"]], shape)
    state = {attn + "q_proj.weight": q, attn + "k_proj.weight": k, attn + "v_proj.weight": v}
    if names["qkv_bias"] in layer:
        qb, kb, vb = split_qkv(layer[names["qkv_bias"]], shape)
        state.update({attn + "q_proj.bias": qb, attn + "k_proj.bias": kb, attn + "v_proj.bias": vb})
    state[attn + "o_proj.weight"] = layer[names["dense"]]
    if names["dense_bias"] in layer:
        state[attn + "o_proj.bias"] = layer[names["dense_bias"]]
    if layout.num_experts:
        state.update(experts.layer_to_hf(layer, i, layout, shape.num_experts, f))
    else:
        gate, up = _hf_gate_and_up(names, layout, layer, f)
        state.update({mlp + "gate_proj.weight": gate, mlp + "up_proj.weight": up,
                      mlp + "down_proj.weight": layer[names["fc2"]]})
    if names["fc1_bias"] in layer:
        gb, ub = _hf_gate_and_up(names, layout, layer, f, "_bias")
        state.update({mlp + "gate_proj.bias": gb, mlp + "up_proj.bias": ub,
                      mlp + "down_proj.bias": layer[names["fc2_bias"]]})
    state[pre + "input_layernorm.weight"] = layer[names["input_norm"]]
    state[pre + "post_attention_layernorm.weight"] = layer[names["post_norm"]]
    return state


def hf_tensors(parts: Iterator[Part], shape: ModelShape, layout: WeightLayout) -> Iterator[tuple[str, torch.Tensor]]:
    """The tree's full layout, part by part -> HF's (name, tensor), in HF's order (the embedding and
    the head may come as pieces, and go as pieces: porter/convert/pieces.py)."""
    v = shape.vocab_size
    for kind, i, value in parts:
        if kind == "embedding":
            yield "model.embed_tokens.weight", first_rows(value, v)
        elif kind == "layer":
            yield from megatron_layer_to_hf(value, i, shape, layout).items()
        elif kind == "final_norm":
            yield "model.norm.weight", value
        elif kind == "output" and value is not None:
            yield "lm_head.weight", first_rows(value, v)


def megatron_to_hf(weights: MegatronWeights, layout: WeightLayout) -> dict[str, torch.Tensor]:
    """One full copy in the tree's layout -> an HF state dict (views of it where no copy is needed)."""
    return dict(hf_tensors(weights.parts(), weights.shape, layout))
