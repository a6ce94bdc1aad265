"""Gated MLP: SwiGLU, silu(x W_gate) * (x W_up), on one fused gate+up projection.

Spec: `activation.type` (GPT: gelu). Trees spell the switch three ways: porter's
`--activation-func-type swiglu`, microsoft's `--swiglu` (from NVIDIA's July 2023 rebase) and
BigScience's `--glu-activation swiglu`; microsoft's and BigScience's come with their own
implementation, whose fused weight puts the gate in the first half (microsoft) or the second
(BigScience): the weight layout says which, for conversion.
HF: `hidden_act` = silu with a gate_proj/up_proj pair (LLaMA).
"""

from __future__ import annotations

from porter.edits import transformer as T
from porter.features.base import Difference
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import choice

GATE_FIRST = "gate first: one fused [gate; up] projection, silu on the first half"
GATE_SECOND = "gate second: one fused [up; gate] projection, silu on the second half"
SEPARATE = "separate projections: silu on the first one's output, times the second's"


class GatedMLP(Difference):
    name = "swiglu"
    hf_fields = ("hidden_act", "hidden_activation")
    fields = {"activation.type": choice("gelu", "gelu", "swiglu", help="MLP activation")}
    spellings = {
        "swiglu": (
            Spelling(
                "swiglu", "--activation-func-type", "activation_func_type", "swiglu",
                "args.activation_func_type == 'swiglu'", NETWORK,
                (("type", "str"), ("default", "'gelu'"), ("choices", "['gelu', 'swiglu']"),
                 ("help", "'Activation of the MLP: gelu, or swiglu (silu(gate) * up, one fused gate+up projection).'")),
                layout=GATE_FIRST, weights=(("gate_first", True),),
            ),
            # microsoft (from NVIDIA's July 2023 rebase): gated_linear_unit doubles dense_h_to_4h.
            tree_spelling("swiglu", "--swiglu", "swiglu", True, "args.swiglu", ((TRANSFORMER, "gated_linear_unit"),),
                          layout=GATE_FIRST, weights=(("gate_first", True),)),
            # Habana's hand port (7086aadb): a second, separate projection multiplies silu(first).
            tree_spelling("swiglu", "--activation-func-type", "activation_func_type", "swiglu",
                          "args.activation_func_type == 'swiglu'", ((TRANSFORMER, "dense_h_to_4h_swiglu"),),
                          layout=SEPARATE),
            # bigscience: GLU_ACTIVATIONS chunk x1, x2 and return x1 * act(x2).
            tree_spelling("swiglu", "--glu-activation", "glu_activation", "swiglu", "args.glu_activation == 'swiglu'",
                          ((TRANSFORMER, "GLU_ACTIVATIONS"),), layout=GATE_SECOND, weights=(("gate_first", False),)),
        ),
    }

    def wanted(self, spec):
        return spec["activation.type"] == "swiglu"

    def plan(self, p):
        p.switch("swiglu")
        if p.has_dest("bias_gelu_fusion"):
            p.defaults["bias_gelu_fusion"] = False  # the bias-gelu fusion fuses a gelu
        if p.implemented("swiglu"):
            return
        test = p.tests["swiglu"]
        lines = [f"if {test}:"]
        for dest in ("openai_gelu", "onnx_safe"):
            if p.has_dest(dest):
                lines.append(f"    assert not args.{dest}, '--{dest.replace('_', '-')} cannot be combined with swiglu'")
        if p.has_dest("bias_gelu_fusion"):
            lines += ["    # the bias-gelu fusion fuses a gelu: swiglu has none", "    args.bias_gelu_fusion = False"]
        if len(lines) > 1:
            p.checks.append("\n".join(lines))
        p.names_for(TRANSFORMER, "swiglu")
        p.edit(TRANSFORMER, "swiglu", "the MLP's first projection becomes a fused gate+up projection",
               rw(T.FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=test))
        p.edit(TRANSFORMER, "swiglu", "the MLP uses swiglu when the switch is on",
               rw(T.SetActivation, cls="ParallelMLP", test=test, func_name="swiglu"))
        p.import_into(TRANSFORMER, "swiglu", "from megatron.model.swiglu import swiglu", "imports swiglu")
        p.create("megatron/model/swiglu.py", "swiglu", "the SwiGLU activation", "swiglu.py.j2")

    def from_hf(self, config):
        act = config.get("hidden_act") or config.get("hidden_activation")
        return {"activation.type": "swiglu"} if act == "silu" else {}

    def to_hf(self, spec, config):
        if self.wanted(spec):
            config["hidden_act"] = "silu"

    def layout(self, profile, spec):
        found = profile.spellings.get("swiglu")
        return dict(found.weights) if found is not None and found.weights else {"gate_first": True}
