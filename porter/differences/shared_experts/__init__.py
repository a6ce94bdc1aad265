"""Shared experts (DeepSeek-V2, DeepSeek-V3): a dense MLP beside the routed experts, for every token.

Spec: `moe.shared_ffn_hidden_size` (the shared experts' MLP width, all of them as one MLP;
unset: none). Switch, spelled as Megatron-LM spells it: `--moe-shared-expert-intermediate-size`.
When the switch is set, each layer with experts builds the tree's ParallelMLP at that width
next to its MoE layer (`self.shared_experts`) and adds its output to the MoE layer's
(rewrites.py here): split over tensor-parallel ranks as the dense MLP is, replicated over
expert-parallel ones. Weights (weights.py here): HF's `mlp.shared_experts.gate_proj`,
`up_proj`, `down_proj`.
HF (DeepSeek-V2, DeepSeek-V3): `n_shared_experts` experts of `moe_intermediate_size` each,
built by transformers as one MLP n_shared_experts x moe_intermediate_size wide.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.moe.hf import fields_of
from porter.differences.shared_experts import rewrites as S
from porter.differences.shared_experts.probes import shared_probes
from porter.differences.shared_experts.weights import shared_weights
from porter.errors import PorterError
from porter.hf_reading import as_read
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "moe_shared_experts"
FIELD = "moe.shared_ffn_hidden_size"
# model type -> (its count field, its width field)
BY_MODEL_TYPE = {"deepseek_v2": ("n_shared_experts", "moe_intermediate_size"),
                 "deepseek_v3": ("n_shared_experts", "moe_intermediate_size")}


class SharedExperts(Difference):
    name = SWITCH
    fields = {FIELD: number(None, whole=True, help="the shared experts' MLP width, all of them as one (unset: none)")}
    hf_fields = ("n_shared_experts",)
    spellings = {SWITCH: (Spelling(
        SWITCH, "--moe-shared-expert-intermediate-size", "moe_shared_expert_intermediate_size", None,
        "args.moe_shared_expert_intermediate_size is not None", NETWORK,
        (("type", "int"), ("default", "None"),
         ("help", "'Shared experts: a dense MLP this wide beside the routed experts of every MoE layer.'"))),)}
    pipeline_engine = False

    def wanted(self, spec):
        return spec[FIELD] is not None

    def validate(self, values, given, fail):
        if values[FIELD] is not None and values["moe.num_experts"] is None:
            raise fail(FIELD, f"{FIELD} = {values[FIELD]} without moe.num_experts", "set moe.num_experts, or remove "
                       + FIELD, message=f"inconsistent spec: {FIELD} needs experts (moe.num_experts)")

    def plan(self, p):
        if not (p.values.get("experts") or {}).get("porter_layer"):
            raise unsupported("shared experts are built beside porter's MoE layer; the tree has its own", TRANSFORMER,
                              "porter's MoE layer (megatron/model/mixture_of_experts.py)", "the tree's own MoE layer")
        width = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        p.describe_model("shared experts: a dense MLP every token of a layer with experts goes through, beside them")
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.mixture_of_experts import built_at_width",
                      "imports the experts' width")
        p.edit(TRANSFORMER, SWITCH, f"layers with experts build shared experts at the width of {width.option}",
               rw(S.SharedExpertsInit, cls="ParallelTransformerLayer", experts="num_experts", width=f"args.{width.dest}"))
        p.edit(TRANSFORMER, SWITCH, "the shared experts' output is added to the MoE layer's",
               rw(S.SharedExpertsForward, cls="ParallelTransformerLayer"))

    def weights(self, layer):
        if layer.config.get("model_type") in BY_MODEL_TYPE and _width(layer.config):
            shared_weights(layer)

    def probes(self, layer):
        if layer.config.get("model_type") in BY_MODEL_TYPE and _width(layer.config):
            shared_probes(layer)

    def from_hf(self, config):
        if config.get("model_type") not in BY_MODEL_TYPE:
            return {}
        return {FIELD: _width(config) or None}

    def to_hf(self, spec, config):
        known = BY_MODEL_TYPE.get(config.get("model_type"))
        width, experts_width = spec[FIELD], spec["moe.ffn_hidden_size"]
        if known is None:
            if width is not None:
                raise PorterError(f"{spec.hf_class} has no shared experts", file=spec.path, construct=FIELD,
                                  found=f"{FIELD} = {width}", fix="remove it, or name a DeepSeek class")
            return
        if width is None:
            config[known[0]] = 0
            return
        if not experts_width or width % experts_width:
            raise PorterError("DeepSeek's shared experts are whole experts", file=spec.path,
                              construct=f"{FIELD}: a multiple of moe.ffn_hidden_size (n_shared_experts of them)",
                              found=f"{FIELD} = {width}, moe.ffn_hidden_size = {experts_width}",
                              fix="make the shared width a multiple of the experts' width")
        config[known[0]] = width // experts_width

    def tiny(self, spec, tiny):
        """As many shared experts as the spec, each as wide as a tiny expert (the MoE difference's)."""
        if not self.wanted(spec) or not spec["moe.ffn_hidden_size"]:
            return {}
        return {FIELD: spec[FIELD] // spec["moe.ffn_hidden_size"] * (tiny.hidden_size // 2)}


def _width(config) -> int:
    """n_shared_experts x moe_intermediate_size, as transformers reads them (its defaults where absent)."""
    count, width = BY_MODEL_TYPE[config["model_type"]]
    if not fields_of(config["model_type"]).experts(config):  # every layer dense: nothing beside experts
        return 0
    read = as_read(config)
    return int(read.get(count) or 0) * int(read.get(width) or 0)
