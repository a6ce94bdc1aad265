"""The norm epsilon: a number every norm site reads from the tree's --layernorm-epsilon.

Spec: `norm.eps` (GPT: 1e-5; LLaMA-1: 1e-6; LLaMA-2 and later: 1e-5). Every Megatron tree has
the option; the generated entry point sets it as a default, and a converted checkpoint's args
carry it.
HF: `rms_norm_eps` (or `layer_norm_eps` for LayerNorm models).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.schema import number


class NormEps(Difference):
    name = "norm_eps"
    hf_fields = ("rms_norm_eps", "layer_norm_eps")
    fields = {"norm.eps": number(1e-5, high=1.0, help="norm epsilon")}

    def wanted(self, spec):
        return spec["norm.eps"] != 1e-5 or spec["norm.type"] == "rmsnorm"

    def plan(self, p):
        p.default("layernorm_epsilon", p.spec["norm.eps"], "norm.eps")

    def from_hf(self, config):
        eps = config.get("rms_norm_eps", config.get("layer_norm_eps"))
        return {} if eps is None else {"norm.eps": float(eps)}

    def to_hf(self, spec, config):
        config["rms_norm_eps"] = spec["norm.eps"]
