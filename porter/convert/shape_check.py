"""Every tensor's shape against the config, before a conversion writes anything.

A state dict whose k_proj has the rows of 8 key/value heads under a config that says 4 would
otherwise be cut into the wrong groups without a word (or fail deep inside a reshape). Both
ways are checked: the HF tensors against the HF config (read as transformers reads it), and a
checkpoint's full tensors against its args (porter.convert.shape.ModelShape). A mismatch is
refused (exit 2) naming the tensor, the shape the config implies and the shape found.

Only names and shapes are looked at, so a caller that streams tensors can check from the
safetensors header alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from porter.convert.layout import WeightLayout
from porter.convert.shape import ModelShape
from porter.errors import PorterError


def hf_shapes(config: Mapping, layout: WeightLayout) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor an HF checkpoint of this config holds (both spellings of
    Mixtral's experts; lm_head only where the head is untied)."""
    shape = ModelShape.from_hf(dict(config))
    h, f, v = shape.hidden_size, shape.ffn_hidden_size, shape.vocab_size
    q, kv = shape.num_attention_heads * shape.head_dim, shape.num_query_groups * shape.head_dim
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not config.get("tie_word_embeddings"):
        out["lm_head.weight"] = (v, h)
    for i in range(shape.num_layers):
        pre = f"model.layers.{i}."
        attn, mlp = pre + "self_attn.", pre + "mlp."
        out.update({pre + "input_layernorm.weight": (h,), pre + "post_attention_layernorm.weight": (h,),
                    attn + "q_proj.weight": (q, h), attn + "k_proj.weight": (kv, h), attn + "v_proj.weight": (kv, h),
                    attn + "o_proj.weight": (h, q)})
        if layout.qkv_bias:
            out.update({attn + "q_proj.bias": (q,), attn + "k_proj.bias": (kv,), attn + "v_proj.bias": (kv,)})
        if layout.attention_output_bias:
            out[attn + "o_proj.bias"] = (h,)
        if layout.num_experts:
            experts = shape.num_experts
            moe = pre + "block_sparse_moe."
            out.update({moe + "gate.weight": (experts, h), mlp + "gate.weight": (experts, h),
                        mlp + "experts.gate_up_proj": (experts, 2 * f, h), mlp + "experts.down_proj": (experts, h, f)})
            for e in range(experts):
                out.update({f"{moe}experts.{e}.w1.weight": (f, h), f"{moe}experts.{e}.w3.weight": (f, h),
                            f"{moe}experts.{e}.w2.weight": (h, f)})
            continue
        out.update({mlp + "gate_proj.weight": (f, h), mlp + "up_proj.weight": (f, h), mlp + "down_proj.weight": (h, f)})
        if layout.mlp_bias:
            out.update({mlp + "gate_proj.bias": (f,), mlp + "up_proj.bias": (f,), mlp + "down_proj.bias": (h,)})
    return out


def check_hf(shapes: Mapping[str, Sequence[int]], config: Mapping, layout: WeightLayout, path: str) -> None:
    """Refuse an HF state dict (name -> shape) whose tensors contradict its config."""
    expected = hf_shapes(config, layout)
    _refuse([(name, expected[name], tuple(found)) for name, found in shapes.items()
             if name in expected and tuple(found) != expected[name]], path, "config.json", _hf_why(config))


def _hf_why(config: Mapping) -> str:
    shape = ModelShape.from_hf(dict(config))
    return (f"hidden_size {shape.hidden_size}, {shape.num_attention_heads} heads of {shape.head_dim}, "
            f"{shape.num_query_groups} key/value heads, intermediate_size {shape.ffn_hidden_size}, "
            f"vocab_size {shape.vocab_size}" + (f", {shape.num_experts} experts" if shape.num_experts else ""))


def megatron_shapes(shape: ModelShape, layout: WeightLayout, names: Mapping[str, str], experts: int = 0) -> dict[str, tuple[int, ...]]:
    """role key inside a layer -> the full (unsharded) shape the args imply."""
    h, f, d = shape.hidden_size, shape.ffn_hidden_size, shape.head_dim
    groups = shape.num_query_groups
    qkv = groups * (shape.heads_per_group + 2) * d
    out = {names["input_norm"]: (h,), names["post_norm"]: (h,), names["qkv"]: (qkv, h),
           names["dense"]: (h, shape.num_attention_heads * d), names["qkv_bias"]: (qkv,), names["dense_bias"]: (h,)}
    if experts:
        from porter.convert.experts import expert_keys, router_key

        out[router_key(layout)] = (experts, h)
        for e in range(experts):
            fc1, fc2 = expert_keys(layout, e)
            out[fc1], out[fc2] = (2 * f, h), (h, f)
        return out
    if layout.up:
        out.update({names["fc1"]: (f, h), names["up"]: (f, h), names["fc1_bias"]: (f,), names["up_bias"]: (f,)})
    else:
        out.update({names["fc1"]: (2 * f, h), names["fc1_bias"]: (2 * f,)})
    out.update({names["fc2"]: (h, f), names["fc2_bias"]: (h,)})
    return out


def check_megatron(weights, layout: WeightLayout, path: str) -> None:
    """Refuse a checkpoint whose full tensors contradict the args it carries."""
    from porter.convert.tensors import layer_names

    shape = weights.shape
    names = layer_names(layout)
    expected = megatron_shapes(shape, layout, names, shape.num_experts)
    h = shape.hidden_size
    bad = []
    if weights.embedding.shape[1:] != (h,) or weights.embedding.shape[0] < shape.vocab_size:
        bad.append(("word embeddings", (f">= {shape.vocab_size}", h), tuple(weights.embedding.shape)))
    if weights.output is not None and tuple(weights.output.shape) != tuple(weights.embedding.shape):
        bad.append(("output layer", tuple(weights.embedding.shape), tuple(weights.output.shape)))
    if weights.final_norm is not None and tuple(weights.final_norm.shape) != (h,):
        bad.append(("final norm", (h,), tuple(weights.final_norm.shape)))
    for i, layer in enumerate(weights.layers):
        for key, tensor in layer.items():
            if key in expected and tuple(tensor.shape) != expected[key]:
                bad.append((f"layer {i}: {key}", expected[key], tuple(tensor.shape)))
    why = (f"num_layers {shape.num_layers}, hidden_size {h}, {shape.num_attention_heads} heads of {shape.head_dim}, "
           f"{shape.num_query_groups} key/value groups, ffn_hidden_size {shape.ffn_hidden_size}")
    _refuse(bad, path, "the checkpoint's args", why)


def _refuse(bad: list, path: str, source: str, why: str) -> None:
    if not bad:
        return
    name, expected, found = bad[0]
    more = f" (and {len(bad) - 1} more: " + ", ".join(b[0] for b in bad[1:4]) + ("..." if len(bad) > 4 else "") + ")" \
        if len(bad) > 1 else ""
    raise PorterError(
        f"tensor {name} has shape {list(found)}, but {source} implies {list(expected)}{more}",
        file=path, construct=f"tensors shaped as {source} says ({why})",
        found=f"{name}: {list(found)}, expected {list(expected)}",
        fix=f"the weights and {source} are of different models: pass the config.json the weights were saved with",
    )
