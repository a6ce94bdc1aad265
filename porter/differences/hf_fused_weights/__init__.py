"""HF checkpoints that fuse projections the tree's layout keeps in its own order: Phi-3's
`qkv_proj` ([q; k; v] along the rows) and `gate_up_proj` ([gate; up]).

Spec: `hf_weights.fused_qkv` and `hf_weights.fused_gate_up` (GPT, LLaMA: false; Phi-3: true).
The model is the same function either way, so nothing changes in the tree: the HF side of the
weights does (weights.py: each fused HF tensor cut into the parts the tree's own slot joins,
and the tree's tensor split back and concatenated, pure copies both ways), and so do the HF
modules verify reads its reference values from (probes.py: HF's fused outputs seen as the
unfused projections'). A checkpoint read with the unfused names (q_proj, k_proj, v_proj) is
taken as it is.
HF: none; the family (Phi3ForCausalLM) fuses them, so the family spec says so.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.hf_fused_weights.probes import unfused_view
from porter.differences.hf_fused_weights.weights import FUSED, fuse
from porter.schema import flag

FIELDS = {"qkv": "hf_weights.fused_qkv", "gate_up": "hf_weights.fused_gate_up"}


class HFFusedWeights(Difference):
    name = "hf_fused_weights"
    changes_model = False
    fields = {
        FIELDS["qkv"]: flag(False, help="HF's checkpoint holds q, k, v as one qkv_proj [q; k; v] (Phi-3)"),
        FIELDS["gate_up"]: flag(False, help="HF's checkpoint holds the gate and up projections as one gate_up_proj "
                                            "[gate; up] (Phi-3)"),
    }
    converts_only = "HF's fused qkv_proj and gate_up_proj: porter convert and verify split and join them"

    def wanted(self, spec):
        return any(spec[field] for field in FIELDS.values())

    def validate(self, values, given, fail):
        if values[FIELDS["gate_up"]] and values["activation.type"] == "gelu":
            raise fail(FIELDS["gate_up"], "activation.type = 'gelu'", "a gated activation (swiglu), or no fused gate_up",
                       message="inconsistent spec: a fused gate_up_proj holds a gated MLP's two projections")

    def layout(self, profile, spec):
        return {"hf_fused": tuple(part for part, field in FIELDS.items() if spec[field])}

    def weights(self, layer):
        for part in layer.layout.hf_fused:
            fuse(layer, FUSED[part])

    def probes(self, layer):
        unfused_view(layer, [FUSED[part] for part in layer.layout.hf_fused])
