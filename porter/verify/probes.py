"""The points compared layer by layer: each read from the tree (a hook) and from HF.

A probe is named by the tree's own module path in the plain model (`LLaMAModel`), e.g.
`language_model.encoder.layers.0.mlp.dense_4h_to_h`, so a failure names the module a
person opens. The worker (inside the tree) captures what `site`, `path` and `take` say and
saves each tensor-parallel rank's local value; the parent turns the ranks' values into one
[b, s, ...] tensor (`combine`) and computes the same quantity from HF's captures (`hf`).

Probes are listed in forward order: the first one that differs is where the port is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from porter.convert.layout import WeightLayout


@dataclass(frozen=True)
class Probe:
    name: str  # the tree's module path in the plain model
    what: str  # what is compared, for people
    site: str  # "embedding" | "layer" | "final_norm" | "output"
    layer: int  # global layer index (site "layer"), else -1
    path: str  # module path inside the site's module ("" = the module itself)
    take: str  # "output" | "input" | "output+bias" (a linear that returns its bias apart) | "pair" | "routes"
    combine: str  # how tensor-parallel ranks' values join: "same" | "cat" | "gate_up" | "query_key"
    hf: Callable[[dict], torch.Tensor]  # the same quantity from HF's captures, [b, s, ...]
    heads: tuple[int, int] = (0, 0)  # (query heads, key/value heads), for "query_key"


# the gated activation (WeightLayout.activation), as the report names it
ACTIVATIONS = {"swiglu": "SwiGLU activation, silu(gate) * up", "geglu": "GeGLU activation, gelu_tanh(gate) * up"}


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def probe_plan(layout: WeightLayout, num_layers: int, num_heads: int, num_groups: int | None = None) -> list[Probe]:
    groups = num_groups or num_heads
    lm = f"{layout.language_model_key}"
    encoder = f"{lm}.{layout.encoder}"
    # What the embedding hands the first layer: HF's embed_tokens output, scaled (Gemma) by HF's
    # model around it or inside it depending on the transformers version: the first layer's input.
    probes = [Probe(f"{lm}.{layout.embedding}", "word embeddings (the first layer's input)", "embedding", -1, "",
                    "output", "same", lambda c: c["model.layers.0:input"])]
    a, p = layout.attention, layout.mlp
    for i in range(num_layers):
        base = f"{encoder}.{layout.layers}.{i}"
        hf = f"model.layers.{i}"

        def ref(key, hf=hf):
            return lambda c: c[f"{hf}.{key}"]

        def qkv(c, hf=hf):
            """q, k, v per key/value group [ng, np/ng + 2, hn] (per head [np, 3, hn] when ng = np)."""
            b, s = c[f"{hf}.self_attn.q_proj"].shape[:2]
            parts = [c[f"{hf}.self_attn.{x}_proj"].reshape(b, s, groups, -1) for x in "qkv"]
            return torch.cat(parts, dim=3).reshape(b, s, -1)

        def rotary(c, hf=hf):
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            b, s = c[f"{hf}.self_attn.q_proj"].shape[:2]
            q, k = (c[f"{hf}.self_attn.{x}_proj"].reshape(b, s, n, -1).transpose(1, 2)
                    for x, n in (("q", num_heads), ("k", groups)))
            cos, sin = c["model.rotary_emb"]
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            return torch.cat((q.transpose(1, 2), k.transpose(1, 2)), dim=2)  # [b, s, np + ng, hn]

        def gate_up(c, hf=hf):
            """The fused projection's output, in the tree's half order (gate first or second)."""
            gate, up = c[f"{hf}.mlp.gate_proj"], c[f"{hf}.mlp.up_proj"]
            return torch.cat((gate, up) if layout.gate_first else (up, gate), dim=-1)

        def routes(c, hf=hf):
            """HF's router: (logits, top-k weights, top-k experts) -> each token's weight per expert."""
            b, s = c["model.embed_tokens"].shape[:2]
            logits, weights, experts = c[f"{hf}.mlp.gate"]
            dense = torch.zeros_like(logits, dtype=torch.float32).scatter(1, experts, weights.float())
            return dense.reshape(b, s, -1)

        probes += [
            Probe(f"{base}.{layout.input_norm}", "input norm", "layer", i, layout.input_norm, "output", "same",
                  ref("input_layernorm")),
            Probe(f"{base}.{a}.{layout.qkv}", "fused q, k, v projection (per group [ng, np/ng + 2, hn])", "layer", i,
                  f"{a}.{layout.qkv}", "output+bias", "cat", qkv),
            Probe(f"{base}.{a}.{layout.rotary}", "rotary position embedding of q and k", "layer", i,
                  f"{a}.{layout.rotary}", "pair", "query_key", rotary, (num_heads, groups)),
            Probe(f"{base}.{a}", "attention context, softmax(q k^T / sqrt(hn)) v (input of the output projection)",
                  "layer", i, f"{a}.{layout.dense}", "input", "cat", ref("self_attn.o_proj:input")),
            Probe(f"{base}.{a}.{layout.dense}", "attention output projection", "layer", i, f"{a}.{layout.dense}",
                  "output+bias", "same", ref("self_attn.o_proj")),
            Probe(f"{base}.{layout.post_attention_norm}", "post-attention norm", "layer", i,
                  layout.post_attention_norm, "output", "same", ref("post_attention_layernorm")),
            *(_moe_probes(base, p, i, routes, ref("mlp")) if layout.num_experts else [
                *([Probe(f"{base}.{p}.{layout.fc1}", "gate projection", "layer", i, f"{p}.{layout.fc1}",
                         "output+bias", "cat", ref("mlp.gate_proj")),
                   Probe(f"{base}.{p}.{layout.up}", "up projection", "layer", i, f"{p}.{layout.up}",
                         "output+bias", "cat", ref("mlp.up_proj"))] if layout.up else
                  [Probe(f"{base}.{p}.{layout.fc1}", "fused gate and up projections", "layer", i, f"{p}.{layout.fc1}",
                         "output+bias", "gate_up", gate_up)]),
                Probe(f"{base}.{p}", f"{ACTIVATIONS[layout.activation]} (input of the MLP output projection)",
                      "layer", i, f"{p}.{layout.fc2}", "input", "cat", ref("mlp.down_proj:input")),
                Probe(f"{base}.{p}.{layout.fc2}", "MLP output projection", "layer", i, f"{p}.{layout.fc2}",
                      "output+bias", "same", ref("mlp.down_proj")),
            ]),
            Probe(base, "transformer layer output (residual stream)", "layer", i, "", "output", "same",
                  lambda c, hf=hf: _first(c[hf])),
        ]
    probes.append(Probe(f"{encoder}.{layout.final_norm}", "final norm", "final_norm", -1, "", "output", "same",
                        lambda c: c["model.norm"]))
    probes.append(Probe(layout.head_module, "output projection: logits", "output", -1, "", "output", "cat",
                        lambda c: c["lm_head"]))
    return probes


def _moe_probes(base: str, mlp: str, i: int, routes, output) -> list[Probe]:
    """DeepSpeed's MoE layer as the MLP: its router's decision (each token's weight per expert:
    the top-k of the softmax, renormalised; 0 elsewhere), then the layer's output (the
    experts' outputs summed with those weights)."""
    return [
        Probe(f"{base}.{mlp}.deepspeed_moe.gate", "MoE router: each token's weight per expert (top-k, renormalised)",
              "layer", i, f"{mlp}.deepspeed_moe.gate", "routes", "same", routes),
        Probe(f"{base}.{mlp}", "MoE layer: top-k experts per token, weighted by the renormalised router probabilities",
              "layer", i, mlp, "output", "same", output),
    ]


def pipe_module(probe: Probe, num_layers: int, layout=None) -> str:
    """The probe's module path in the generated <Prefix>ModelPipe (named by layer spec index)."""
    order = layout if layout is not None else WeightLayout()
    index = {"embedding": order.pipe_embedding, "layer": order.pipe_layer(probe.layer),
             "final_norm": order.pipe_final_norm(num_layers), "output": order.pipe_output_layer(num_layers)}[probe.site]
    return f"{index}.{probe.path}" if probe.path else str(index)


def orient(probe: Probe, value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A tree value to [b, s, ...]: inside the layer stack the tree works in [s, b, ...].

    Embedding, final norm and logits are [b, s, ...] in porter's port, [s, b, ...] in trees
    that keep that order outside the stack too (microsoft HEAD): the batch dimension says which.
    """
    if probe.take == "routes":  # [s * b, experts]: the tokens of the layer's [s, b] in a row (DeepSpeed's MoE)
        value = value.reshape(-1, batch_size, *value.shape[1:])
    if probe.site == "layer" or (value.shape[0] != batch_size and value.shape[1] == batch_size):
        return value.transpose(0, 1)
    return value


def combine(probe: Probe, ranks: list[torch.Tensor]) -> torch.Tensor:
    """The tensor-parallel ranks' values (in rank order, already oriented) as one tensor."""
    if probe.combine == "same" or len(ranks) == 1:
        return ranks[0]
    if probe.combine == "cat":
        return torch.cat(ranks, dim=-1)
    if probe.combine == "query_key":  # [b, s, np/p + ng/p, hn] per rank: its queries, then its keys
        heads, groups = probe.heads
        queries = ranks[0].shape[2] * heads // (heads + groups)
        return torch.cat([r[:, :, :queries] for r in ranks] + [r[:, :, queries:] for r in ranks], dim=2)
    if probe.combine == "gate_up":  # rank r holds [gate_r | up_r]
        halves = [r.chunk(2, dim=-1) for r in ranks]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=-1)
    raise ValueError(probe.combine)


HF_HOOKS = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
            "self_attn.v_proj", "self_attn.o_proj", "mlp", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
            "mlp.gate")  # a model has the ones its MLP has (Mixtral: mlp.gate, the router)
HF_INPUT_HOOKS = ("self_attn.o_proj", "mlp.down_proj")


def _keep_input(captures: dict, name: str):
    """A forward pre-hook keeping a module's hidden-states input (positional or keyword)."""
    def hook(module, args, kwargs):
        value = args[0] if args else kwargs["hidden_states"]
        captures[name] = value.detach().clone()
    return hook


def capture_hf(model, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Run HF's model on tokens [b, s] (at position ids [b, s], default 0..s-1); return
    (logits [b, s, V], captures by module name)."""
    captures: dict[str, object] = {}
    handles = []

    def keep(name, inputs=False):
        def hook(module, args, output):
            value = args[0] if inputs else output
            captures[name] = tuple(v.detach().clone() for v in value) if isinstance(value, tuple) \
                else value.detach().clone()
        return hook

    modules = dict(model.named_modules())
    wanted = ["model.embed_tokens", "model.norm", "lm_head", "model.rotary_emb"]
    for i in range(model.config.num_hidden_layers):
        wanted.append(f"model.layers.{i}")
        wanted += [f"model.layers.{i}.{k}" for k in HF_HOOKS]
    for name in wanted:
        if name in modules:
            handles.append(modules[name].register_forward_hook(keep(name)))
    handles.append(modules["model.layers.0"].register_forward_pre_hook(_keep_input(captures, "model.layers.0:input"),
                                                                     with_kwargs=True))
    for i in range(model.config.num_hidden_layers):
        for k in HF_INPUT_HOOKS:
            name = f"model.layers.{i}.{k}"
            if name in modules:
                handles.append(modules[name].register_forward_hook(keep(f"{name}:input", inputs=True)))
    try:
        with torch.no_grad():
            # An explicit all-ones mask: HF attends causally over the whole row, as the tree does with
            # --reset-position-ids alone (without one, HF would read reset ids as packed documents).
            keep = torch.ones_like(tokens)
            if positions is None:
                positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
            logits = model(input_ids=tokens, position_ids=positions, attention_mask=keep, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits.detach(), captures
