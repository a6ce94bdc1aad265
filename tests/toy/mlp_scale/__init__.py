"""A toy difference from outside porter: the MLP's output scaled per channel by a learned vector.

It lives only here, in the tests, and uses porter's extension points alone (no product file
knows it): its spec field (`toy.mlp_scale`), its switch (`--mlp-scale`), its rewrites of the
tree's transformer layer (rewrites.py), its template (mlp_scale.py.j2: the module the tree's
layer builds), its weight (the scale vector, HF `mlp.scale.weight` <-> the tree's
`mlp_scale.weight`) and its probe (the scaled output), and its HF reference class
(modeling.py). A spec takes it in with `differences_from = ["tests.toy.mlp_scale"]`.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import flag
from porter.weights import Weight
from tests.toy.mlp_scale import rewrites as R

SWITCH = "mlp_scale"
FIELD = "toy.mlp_scale"
HF_NAME = "mlp.scale.weight"


class MLPScale(Difference):
    name = SWITCH
    fields = {FIELD: flag(False, help="the MLP output times a learned vector, per channel (a toy)")}
    spellings = {
        SWITCH: (Spelling(SWITCH, "--mlp-scale", "mlp_scale", True, "args.mlp_scale", NETWORK,
                          (("action", "'store_true'"), ("help", "'Scale the MLP output per channel (a toy).'"))),),
    }

    def wanted(self, spec):
        return spec[FIELD]

    def plan(self, p):
        p.describe_model("the MLP output times a learned vector, per channel (--mlp-scale)")
        spelling = p.switch(SWITCH)
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.mlp_scale import MLPScale", "imports the scale module")
        p.edit(TRANSFORMER, SWITCH, "ParallelTransformerLayer builds the scale when the switch is on",
               rw(R.AddMLPScale, cls="ParallelTransformerLayer", test=spelling.test))
        p.edit(TRANSFORMER, SWITCH, "ParallelTransformerLayer scales the MLP output before the residual add",
               rw(R.ScaleMLPOutput, cls="ParallelTransformerLayer"))
        p.create("megatron/model/mlp_scale.py", SWITCH, "the per-channel scale module", "mlp_scale.py.j2")

    def weights(self, layer):
        layer.add_after("mlp_out", SWITCH, [Weight(f"{SWITCH}.weight", (HF_NAME,))])

    def probes(self, layer):
        layer.add_after("mlp_out", SWITCH, [layer.probe(SWITCH, "the MLP output scaled per channel",
                                                        layer.ref("mlp.scale"))])

    def from_hf(self, config):
        return {FIELD: True} if config.get("model_type") == "scaled_mlp_llama" else {}


DIFFERENCES = [MLPScale()]  # what a spec's `differences_from` takes in
