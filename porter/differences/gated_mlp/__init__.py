"""Gated MLP: act(x W_gate) * (x W_up) on one fused gate+up projection; SwiGLU or GeGLU.

Spec: `activation.type` (GPT: gelu; LLaMA: swiglu, silu on the gate; Gemma: geglu, GELU's
tanh approximation on the gate, HF's `gelu_pytorch_tanh`). Trees spell the SwiGLU switch
three ways: porter's `--activation-func-type swiglu`, microsoft's `--swiglu` (from NVIDIA's
July 2023 rebase) and BigScience's `--glu-activation swiglu`; microsoft's and BigScience's
come with their own implementation, whose fused weight puts the gate in the first half
(microsoft) or the second (BigScience): the weight layout says which, for conversion. GeGLU
is porter's `--activation-func-type geglu`; beside a tree's own gated MLP, porter puts GELU
(tanh) on that MLP's gate in the tree's idiom (beside.py): `--geglu` beside a boolean
`--swiglu` (microsoft's), a choice `geglu_tanh` of the tree's option of choices (Habana's
hand port, separate projections) or of its dict of GLU functions (BigScience's gate-second
`--glu-activation`, whose own `geglu` is the exact erf GELU, not Gemma's).

porter's one option carries every gated activation (choices gelu, swiglu, geglu), and the
code it writes is the same whichever family asks: the fused projection is doubled for any
gated choice, each choice picks its function, and swiglu.py holds both. So a tree ported
with LLaMA and then Gemma (or the other way round) gets each line once and both work.
HF: `hidden_act` (LLaMA: silu) or, in Gemma's configs, `hidden_activation`, which wins.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.gated_mlp import registry
from porter.differences.gated_mlp import rewrites as R
from porter.differences.gated_mlp.beside import beside_spelling, plan_beside
from porter.differences.gated_mlp.layouts import GATE_FIRST, GATE_SECOND, SEPARATE
from porter.differences.gated_mlp.probes import gated_probes
from porter.differences.gated_mlp.weights import gated_weights
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import choice

__all__ = ["GATE_FIRST", "GATE_SECOND", "SEPARATE", "GatedMLP"]

# activation.type -> (the function in megatron/model/swiglu.py, what it computes)
GATED = {"swiglu": ("swiglu", "silu(gate) * up"), "geglu": ("geglu", "gelu_tanh(gate) * up")}
# HF activation names -> activation.type
HF_ACTIVATIONS = {"silu": "swiglu", "gelu_pytorch_tanh": "geglu"}
# model types whose config spells the tanh GELU "gelu" (HF's GemmaConfig reads it as gelu_pytorch_tanh)
LEGACY_TANH_GELU = ("gemma",)

_OPTION = ("--activation-func-type", "activation_func_type")
_ADD = (("type", "str"), ("default", "'gelu'"), ("choices", "['gelu', " + ", ".join(repr(a) for a in GATED) + "]"),
        ("help", "'Activation of the MLP: gelu, or a gated one on a fused gate+up projection: "
                 "swiglu (silu(gate) * up) or geglu (gelu(gate) * up, GELU\\'s tanh approximation).'"))
# True for every gated choice of porter's option: the fused projection is doubled for each.
PORTER_GATED_TEST = f"args.{_OPTION[1]} in ({', '.join(repr(a) for a in GATED)})"


def _porter_spelling(activation: str, **more) -> Spelling:
    return Spelling(activation, *_OPTION, activation, f"args.{_OPTION[1]} == '{activation}'", NETWORK, _ADD, **more)


class GatedMLP(Difference):
    name = "swiglu"
    model_switches = ('swiglu',)
    hf_fields = ("hidden_act", "hidden_activation")
    fields = {"activation.type": choice("gelu", "gelu", *GATED, help="MLP activation")}
    spellings = {
        "swiglu": (
            _porter_spelling("swiglu", layout=GATE_FIRST, weights=(("gate_first", True),)),
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
        # porter's option; or, beside a tree's own boolean --swiglu, porter's --geglu (beside.py)
        "geglu": (_porter_spelling("geglu", layout=GATE_FIRST, weights=(("gate_first", True),)),
                  beside_spelling("geglu")),
    }

    def wanted(self, spec):
        return spec["activation.type"] in GATED

    def detect(self, parsed):
        return registry.detect(parsed)

    def plan(self, p):
        activation = p.spec["activation.type"]
        own = p.implemented("swiglu")
        beside = activation != "swiglu" and own is not None
        spelling = plan_beside(p, own, activation, GATED[activation][1]) if beside else p.switch(activation)
        p.values["gated_mlp"] = {"activation": activation}
        option = spelling.option if beside else "--activation-func-type"
        p.describe_model(f"activation {activation}: the transformer's MLP ({option}, see transformer.py)")
        if p.has_dest("bias_gelu_fusion"):
            p.defaults["bias_gelu_fusion"] = False  # the bias-gelu fusion fuses a plain gelu
        if beside:
            p.create("megatron/model/swiglu.py", self.name, "the gated activations (SwiGLU, GeGLU)", "swiglu.py.j2")
            return
        if p.implemented(activation):
            return
        gated = PORTER_GATED_TEST if spelling.origin == "porter" else spelling.test
        lines = [f"if {gated}:"]
        for dest in ("openai_gelu", "onnx_safe"):
            if p.has_dest(dest):
                lines.append(f"    assert not args.{dest}, '--{dest.replace('_', '-')} cannot be combined with "
                             "a gated activation'")
        if p.has_dest("bias_gelu_fusion"):
            lines += ["    # the bias-gelu fusion fuses a plain gelu: a gated MLP has none",
                      "    args.bias_gelu_fusion = False"]
        if len(lines) > 1:
            p.checks.append("\n".join(lines))
        p.names_for(TRANSFORMER, activation)
        p.edit(TRANSFORMER, activation, "the MLP's first projection becomes a fused gate+up projection",
               rw(R.FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=gated))
        # porter's option: every gated choice gets its function, so that families share the lines
        chosen = GATED if spelling.origin == "porter" else {activation: GATED[activation]}
        for name, (func, what) in chosen.items():
            test = spelling.test if name == activation else _porter_spelling(name).test
            p.edit(TRANSFORMER, activation, f"the MLP uses {func} ({what}) when the switch says {name}",
                   rw(R.SetActivation, cls="ParallelMLP", test=test, func_name=func))
        p.import_into(TRANSFORMER, activation, f"from megatron.model.swiglu import {', '.join(sorted(f for f, _ in chosen.values()))}",
                      "imports the gated activations")
        # one file for every family: its header names the difference (swiglu), not the activation
        p.create("megatron/model/swiglu.py", self.name, "the gated activations (SwiGLU, GeGLU)", "swiglu.py.j2")

    def probes(self, layer):
        gated_probes(layer)

    def weights(self, layer):
        gated_weights(layer)

    def from_hf(self, config):
        # transformers 4's GemmaConfig has hidden_activation, which wins; 5's reads hidden_act only
        act = (config.get("hidden_activation") if config.defines("hidden_activation") else None) or config.get("hidden_act")
        if act == "gelu" and config.get("model_type") in LEGACY_TANH_GELU:
            act = "gelu_pytorch_tanh"
        if act is None:
            return {}
        # the families that spell hidden_act gate their MLP: an activation porter lacks is refused by name
        return {"activation.type": HF_ACTIVATIONS.get(act, f"gated {act}")}

    def to_hf(self, spec, config):
        activation = spec["activation.type"]
        if activation in GATED:
            # the class's own spelling: Gemma3TextConfig reads hidden_activation only
            from porter.hf_reading import class_defines

            model_type = config.get("model_type")
            only_new = (class_defines(model_type, "hidden_activation", unknown=False)
                        and not class_defines(model_type, "hidden_act", unknown=True))
            config["hidden_activation" if only_new else "hidden_act"] = next(
                hf for hf, a in HF_ACTIVATIONS.items() if a == activation)

    def layout(self, profile, spec):
        found = profile.spellings.get("swiglu")
        out = dict(found.weights) if found is not None and found.weights else {"gate_first": True}
        if spec["activation.type"] in GATED:
            out["activation"] = spec["activation.type"]
        return out
