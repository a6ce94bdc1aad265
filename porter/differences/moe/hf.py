"""How each HF model type spells its experts in config.json, and what transformers reads when a
field is absent (its config class's default): the facts of transformers' configuration_*.py.

A field absent from config.json is read as transformers reads it: the config class's default
(a Qwen3-MoE config without norm_topk_prob does not renormalise). Every field is read only for
the model types listed here; a model type porter does not know is read by Mixtral's names,
with no defaults (a config without num_local_experts has no experts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpertFields:
    """One model type's config fields for its experts (None: the type has no such field)."""

    counts: tuple[str, ...]  # the expert count, first present wins (transformers 5 maps num_experts here)
    top_k: str = "num_experts_per_tok"
    aux_loss_coef: str = "router_aux_loss_coef"
    norm_topk_prob: str | None = None  # None: the top-k weights are always renormalised
    width: str | None = None  # the experts' own MLP width
    interval: str | None = None  # experts in every interval-th layer
    dense_layers: str | None = None  # 0-based layers that keep a dense MLP
    first_dense: str | None = None  # how many layers, from the first, keep a dense MLP (DeepSeek)
    jitter: str | None = None  # noise on the router's input in training
    renormalised: bool = True  # without a norm_topk_prob field: does the model renormalise its top-k?
    # fields transformers' modeling code does not read, at the one value where it and the model's
    # own code agree (any other value is refused: which of the two would porter follow?)
    agreed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # transformers' config class defaults
    # how save_pretrained writes the MoE block: its module under model.layers.<i>., and expert e's
    # gate, up and down projections under <block>.experts.<e>. (the router: <block>.gate.weight)
    disk: tuple[str, str, str, str] = ("block_sparse_moe", "w1", "w3", "w2")

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (*self.counts, self.top_k, self.aux_loss_coef, self.norm_topk_prob, self.width,
                                 self.interval, self.dense_layers, self.first_dense, self.jitter, *self.agreed) if n)

    def read(self, config: dict, name: str | None) -> Any:
        """The field as transformers reads it: the config's value, else the class's default."""
        if name is None:
            return None
        value = config.get(name)
        return self.defaults.get(name) if value is None else value

    def dense_of(self, config: dict) -> list[int]:
        """The 0-based layers that keep a dense MLP: listed, or the first k."""
        if self.first_dense is not None:
            return list(range(int(self.read(config, self.first_dense) or 0)))
        return list(self.read(config, self.dense_layers) or [])

    def count(self, config: dict) -> int | None:
        for name in self.counts:
            if config.get(name) is not None:
                return int(config[name])
        return self.defaults.get(self.counts[0])


MIXTRAL = ExpertFields(
    counts=("num_local_experts",), jitter="router_jitter_noise",
    defaults={"num_local_experts": 8, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.001,
              "router_jitter_noise": 0.0},
)
QWEN3_MOE = ExpertFields(
    counts=("num_local_experts", "num_experts"), norm_topk_prob="norm_topk_prob", width="moe_intermediate_size",
    interval="decoder_sparse_step", dense_layers="mlp_only_layers", disk=("mlp", "gate_proj", "up_proj", "down_proj"),
    defaults={"num_local_experts": 128, "num_experts_per_tok": 8, "router_aux_loss_coef": 0.001,
              "norm_topk_prob": False, "moe_intermediate_size": 768, "decoder_sparse_step": 1,
              "mlp_only_layers": []},
)
# DeepSeek: 'n_routed_experts' routed experts (the shared ones: porter/differences/shared_experts),
# experts in every layer from first_k_dense_replace on; transformers reads neither moe_layer_freq
# nor DeepSeek-V2's norm_topk_prob (its V2 router never renormalises, the original code does when
# true). aux_loss_alpha is DeepSeek's own (transformers computes no load-balancing loss for it).
DEEPSEEK_V2 = ExpertFields(
    counts=("n_routed_experts",), aux_loss_coef="aux_loss_alpha", width="moe_intermediate_size",
    first_dense="first_k_dense_replace", renormalised=False, disk=("mlp", "gate_proj", "up_proj", "down_proj"),
    agreed={"norm_topk_prob": False, "moe_layer_freq": 1},
    defaults={"n_routed_experts": 64, "moe_intermediate_size": 1407, "first_k_dense_replace": 0, "aux_loss_alpha": 0.0},
)
DEEPSEEK_V3 = ExpertFields(
    counts=("n_routed_experts",), aux_loss_coef="aux_loss_alpha", norm_topk_prob="norm_topk_prob",
    width="moe_intermediate_size", first_dense="first_k_dense_replace", disk=("mlp", "gate_proj", "up_proj", "down_proj"),
    agreed={"moe_layer_freq": 1},
    defaults={"n_routed_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
              "first_k_dense_replace": 3, "norm_topk_prob": True, "aux_loss_alpha": 0.0},
)
BY_MODEL_TYPE = {"mixtral": MIXTRAL, "qwen3_moe": QWEN3_MOE, "deepseek_v2": DEEPSEEK_V2, "deepseek_v3": DEEPSEEK_V3}
UNKNOWN = ExpertFields(counts=("num_local_experts",), jitter="router_jitter_noise")


def fields_of(model_type: str | None) -> ExpertFields:
    return BY_MODEL_TYPE.get(model_type or "", UNKNOWN)


def every_name() -> tuple[str, ...]:
    """Every config field some model type's experts are spelled with."""
    names: list[str] = []
    for fields in (*BY_MODEL_TYPE.values(), UNKNOWN):
        names += [n for n in fields.names() if n not in names]
    return tuple(names)
