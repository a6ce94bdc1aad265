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
    jitter: str | None = None  # noise on the router's input in training
    defaults: dict[str, Any] = field(default_factory=dict)  # transformers' config class defaults
    # how save_pretrained writes the MoE block: its module under model.layers.<i>., and expert e's
    # gate, up and down projections under <block>.experts.<e>. (the router: <block>.gate.weight)
    disk: tuple[str, str, str, str] = ("block_sparse_moe", "w1", "w3", "w2")

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (*self.counts, self.top_k, self.aux_loss_coef, self.norm_topk_prob, self.width,
                                 self.interval, self.dense_layers, self.jitter) if n)

    def read(self, config: dict, name: str | None) -> Any:
        """The field as transformers reads it: the config's value, else the class's default."""
        if name is None:
            return None
        value = config.get(name)
        return self.defaults.get(name) if value is None else value

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
BY_MODEL_TYPE = {"mixtral": MIXTRAL, "qwen3_moe": QWEN3_MOE}
UNKNOWN = ExpertFields(counts=("num_local_experts",), jitter="router_jitter_noise")


def fields_of(model_type: str | None) -> ExpertFields:
    return BY_MODEL_TYPE.get(model_type or "", UNKNOWN)


def every_name() -> tuple[str, ...]:
    """Every config field some model type's experts are spelled with."""
    names: list[str] = []
    for fields in (*BY_MODEL_TYPE.values(), UNKNOWN):
        names += [n for n in fields.names() if n not in names]
    return tuple(names)
