"""How each HF model type spells its experts in config.json: the names of transformers'
configuration_*.py. The values are read as transformers reads them (porter.hf_reading): a field
absent or null is the config class's default (a Qwen3-MoE config without norm_topk_prob does
not renormalise), either of a class's names for a field is the field (Qwen3-MoE's num_experts
is its num_local_experts). A model type porter does not know is read by Mixtral's names.

DeepSeek's own fields that transformers' class does not define (moe_layer_freq, DeepSeek-V2's
unread norm_topk_prob) are read from the file as written: at the one value where transformers'
model and the model's own code agree they change nothing; any other value is refused (which of
the two would porter follow?). aux_loss_alpha is DeepSeek's training loss, which transformers
does not compute: read from the file, absent is none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from porter.hf_reading import as_read, raw_of


@dataclass(frozen=True)
class ExpertFields:
    """One model type's config fields for its experts (None: the type has no such field)."""

    count: str  # the expert count (the class's name; its other names read the same)
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
    own_loss: bool = False  # aux_loss_coef is the model's own field, not the class's (DeepSeek)
    # how save_pretrained writes the MoE block: its module under model.layers.<i>., and expert e's
    # gate, up and down projections under <block>.experts.<e>. (the router: <block>.gate.weight)
    disk: tuple[str, str, str, str] = ("block_sparse_moe", "w1", "w3", "w2")

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.count, self.top_k, self.aux_loss_coef, self.norm_topk_prob, self.width,
                                 self.interval, self.dense_layers, self.first_dense, self.jitter, *self.agreed) if n)

    def read(self, config: dict, name: str | None) -> Any:
        """The field as transformers reads it (its class's default where the file has none)."""
        if name is None:
            return None
        return as_read(config).get(name)

    def loss_coef(self, config: dict) -> float | None:
        if self.own_loss:
            return float(raw_of(config).get(self.aux_loss_coef) or 0.0)
        coef = self.read(config, self.aux_loss_coef)
        return None if coef is None else float(coef)

    def dense_of(self, config: dict) -> list[int]:
        """The 0-based layers that keep a dense MLP: listed, or the first k."""
        if self.first_dense is not None:
            return list(range(int(self.read(config, self.first_dense) or 0)))
        return list(self.read(config, self.dense_layers) or [])

    def experts(self, config: dict) -> int | None:
        """The expert count; None where the model has none (a DeepSeek config whose layers are
        all dense, first_k_dense_replace >= num_hidden_layers, holds the class's default count)."""
        count = self.read(config, self.count)
        if count is None or self.all_dense(config):
            return None
        return int(count)

    def all_dense(self, config: dict) -> bool:
        layers = as_read(config).get("num_hidden_layers")
        return self.first_dense is not None and isinstance(layers, int) and len(self.dense_of(config)) >= layers


MIXTRAL = ExpertFields(count="num_local_experts", jitter="router_jitter_noise")
QWEN3_MOE = ExpertFields(
    count="num_experts", norm_topk_prob="norm_topk_prob", width="moe_intermediate_size",
    interval="decoder_sparse_step", dense_layers="mlp_only_layers", disk=("mlp", "gate_proj", "up_proj", "down_proj"),
)
# DeepSeek: 'n_routed_experts' routed experts (the shared ones: porter/differences/shared_experts),
# experts in every layer from first_k_dense_replace on; transformers reads neither moe_layer_freq
# nor DeepSeek-V2's norm_topk_prob (its V2 router never renormalises, the original code does when
# true). aux_loss_alpha is DeepSeek's own (transformers computes no load-balancing loss for it).
DEEPSEEK_V2 = ExpertFields(
    count="n_routed_experts", aux_loss_coef="aux_loss_alpha", width="moe_intermediate_size",
    first_dense="first_k_dense_replace", renormalised=False, disk=("mlp", "gate_proj", "up_proj", "down_proj"),
    agreed={"norm_topk_prob": False, "moe_layer_freq": 1}, own_loss=True,
)
DEEPSEEK_V3 = ExpertFields(
    count="n_routed_experts", aux_loss_coef="aux_loss_alpha", norm_topk_prob="norm_topk_prob",
    width="moe_intermediate_size", first_dense="first_k_dense_replace", disk=("mlp", "gate_proj", "up_proj", "down_proj"),
    agreed={"moe_layer_freq": 1}, own_loss=True,
)
BY_MODEL_TYPE = {"mixtral": MIXTRAL, "qwen3_moe": QWEN3_MOE, "deepseek_v2": DEEPSEEK_V2, "deepseek_v3": DEEPSEEK_V3}
UNKNOWN = ExpertFields(count="num_local_experts", jitter="router_jitter_noise")


def fields_of(model_type: str | None) -> ExpertFields:
    return BY_MODEL_TYPE.get(model_type or "", UNKNOWN)


def every_name() -> tuple[str, ...]:
    """Every config field some model type's experts are spelled with."""
    names: list[str] = []
    for fields in (*BY_MODEL_TYPE.values(), UNKNOWN):
        names += [n for n in fields.names() if n not in names]
    return tuple(names)
