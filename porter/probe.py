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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.layout import WeightLayout

# HF's logits as its model returns them (a soft-capped model changes lm_head's output after it):
# what the tree's side of the output probe holds too (its model's return value)
LOGITS = "logits"


@dataclass(frozen=True)
class Probe:
    name: str  # the tree's module path in the plain model
    what: str  # what is compared, for people
    site: str  # "embedding" | "layer" | "final_norm" | "output"
    layer: int  # global layer index (site "layer"), else -1
    path: str  # module path inside the site's module ("" = the module itself)
    # what the tree's hook keeps: "output" | "input" | "output+bias" (a linear that returns its bias
    # apart), or "package.module:function" (function(module, args, output) -> tensor, a difference's)
    take: str
    combine: str  # how tensor-parallel ranks' values join: "same" | "cat" | "gate_up" | "query_key"
    hf: Callable[[dict], torch.Tensor]  # the same quantity from HF's captures, [b, s, ...]
    heads: int = 0  # query heads, for "query_key" (each rank holds its queries, then its keys)
    # the tree's value [..] -> [s, b, ...] before the usual orientation (a value laid out otherwise)
    reshape: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    def tree_side(self) -> dict:
        """What the worker inside the tree needs to hook it (plain values)."""
        return {"name": self.name, "site": self.site, "layer": self.layer, "path": self.path, "take": self.take}


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


class LayerProbes:
    """The probes of one transformer layer, by slot, in forward order.

    The base slots are GPT's layer with HF's LLaMA-family module names: input norm, fused
    q, k, v projection (laid out per key/value head: [ng, np/ng + 2, hn], per head when every
    head has its own), attention context, output projection, post-attention norm, the MLP's
    input projection(s), its activation, its output projection, the layer's output. A
    difference replaces a slot's probes or adds a slot after another (`probes()` of
    porter/differences/base.py): rotary adds its rotation after the q, k, v projection, the
    gated MLP fills the input projections, a mixture replaces the MLP.
    """

    SLOTS = ("input_norm", "qkv", "attention", "dense", "post_norm", "mlp_in", "mlp_act", "mlp_out", "layer")

    def __init__(self, layout: WeightLayout, i: int, num_heads: int, config: dict | None = None,
                 num_layers: int = 0) -> None:
        import torch
        self.layout = layout
        self.i = i
        self.num_heads = num_heads
        self.config = config or {}  # the reference's HF config: what a difference's probes may depend on by layer
        self.num_layers = num_layers
        self.base = f"{layout.language_model_key}.{layout.encoder}.{layout.layers}.{i}"  # the tree's layer
        self.hf = f"model.layers.{i}"  # HF's layer
        self.slots: dict[str, list[Probe]] = {slot: [] for slot in self.SLOTS}
        # HF's query and key as rotary takes them, [b, s, heads * hn] each, from HF's captures: the
        # projections' outputs, unless a difference changes them on the way (a query/key norm)
        self.hf_query_key: Callable[[dict], tuple[torch.Tensor, torch.Tensor]] = \
            lambda c, hf=self.hf: (c[f"{hf}.self_attn.q_proj"], c[f"{hf}.self_attn.k_proj"])
        a, m = layout.attention, layout.mlp
        self.slots["input_norm"] = [self.probe(layout.input_norm, "input norm", self.ref("input_layernorm"))]
        self.slots["qkv"] = [self.probe(f"{a}.{layout.qkv}", "fused q, k, v projection (per group [ng, np/ng + 2, hn])", self._qkv, take="output+bias", combine="cat")]
        self.slots["attention"] = [self.probe(f"{a}.{layout.dense}", "attention context, softmax(q k^T / sqrt(hn)) v "
                                              "(input of the output projection)", self.ref("self_attn.o_proj:input"),
                                              take="input", combine="cat", name=f"{self.base}.{a}")]
        self.slots["dense"] = [self.probe(f"{a}.{layout.dense}", "attention output projection",
                                          self.ref("self_attn.o_proj"), take="output+bias")]
        self.slots["post_norm"] = [self.probe(layout.post_attention_norm, "post-attention norm",
                                              self.ref("post_attention_layernorm"))]
        self.slots["mlp_act"] = [self.probe(f"{m}.{layout.fc2}", "activation (input of the MLP output projection)",
                                            self.ref("mlp.down_proj:input"), take="input", combine="cat",
                                            name=f"{self.base}.{m}")]
        self.slots["mlp_out"] = [self.probe(f"{m}.{layout.fc2}", "MLP output projection", self.ref("mlp.down_proj"),
                                            take="output+bias")]
        self.slots["layer"] = [self.probe("", "transformer layer output (residual stream)",
                                          lambda c, hf=self.hf: _first(c[hf]))]

    def ref(self, key: str) -> Callable[[dict], torch.Tensor]:
        """HF's capture of a module of this layer (`key`: its path in the layer; ':input' for its input)."""
        return lambda c, name=f"{self.hf}.{key}": c[name]

    def probe(self, path: str, what: str, hf: Callable[[dict], torch.Tensor], take: str = "output",
              combine: str = "same", name: str | None = None, **more) -> Probe:
        """A probe of the module at `path` in this layer (named by it, unless `name`)."""
        return Probe(name or (f"{self.base}.{path}" if path else self.base), what, "layer", self.i, path, take,
                     combine, hf, **more)

    def replace(self, slot: str, probes: list[Probe]) -> None:
        self.slots[slot] = list(probes)

    def add_after(self, slot: str, new: str, probes: list[Probe]) -> None:
        """A slot of a difference's own, after `slot`."""
        items = list(self.slots.items())
        at = next(i for i, (name, _) in enumerate(items) if name == slot) + 1
        self.slots = dict(items[:at] + [(new, list(probes))] + items[at:])

    def flat(self) -> list[Probe]:
        return [probe for probes in self.slots.values() for probe in probes]

    def _qkv(self, c: dict) -> torch.Tensor:
        """HF's q, k, v per key/value head: [ng, np/ng + 2, hn], ng read off k_proj's width."""
        import torch
        q, k, v = (c[f"{self.hf}.self_attn.{x}_proj"] for x in "qkv")
        b, s = q.shape[:2]
        head_dim = q.shape[-1] // self.num_heads
        groups = k.shape[-1] // head_dim
        parts = [t.reshape(b, s, groups, -1) for t in (q, k, v)]
        return torch.cat(parts, dim=3).reshape(b, s, -1)


def probe_plan(layout: WeightLayout, num_layers: int, num_heads: int, differences=(),
               config: dict | None = None) -> list[Probe]:
    """Every probe, in forward order: the embedding, each layer's slots as the differences shape
    them (for the reference's HF config), the final norm and the logits."""
    lm = f"{layout.language_model_key}"
    encoder = f"{lm}.{layout.encoder}"
    # What the embedding hands the first layer: HF's embed_tokens output, scaled (Gemma) by HF's
    # model around it or inside it depending on the transformers version: the first layer's input.
    probes = [Probe(f"{lm}.{layout.embedding}", "word embeddings (the first layer's input)", "embedding", -1, "",
                    "output", "same", lambda c: c["model.layers.0:input"])]
    for i in range(num_layers):
        layer = LayerProbes(layout, i, num_heads, config, num_layers)
        for difference in differences:
            difference.probes(layer)
        probes += layer.flat()
    probes.append(Probe(f"{encoder}.{layout.final_norm}", "final norm", "final_norm", -1, "", "output", "same",
                        lambda c: c["model.norm"]))
    probes.append(Probe(layout.head_module, "output projection: logits", "output", -1, "", "output", "cat",
                        lambda c: c[LOGITS]))
    return probes
