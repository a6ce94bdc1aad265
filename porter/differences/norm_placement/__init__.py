"""Where a transformer layer normalises: before each sublayer (GPT, LLaMA), before and after
(Gemma-2/3), or after only (OLMo-2).

Spec: `norm.placement` ("pre", GPT's: x + attn(norm(x)), then + mlp(norm(.)); "sandwich",
Gemma-2/3's: x + norm(attn(norm(x))), then + norm(mlp(norm(.))); "post", OLMo-2's:
x + norm(attn(x)), then + norm(mlp(.))). porter's switch: `--norm-placement` (pre, sandwich,
post). When porter adds it (rewrites.py here): the layer builds two more norms of the class and
arguments of its post-attention norm, `attention_output_layernorm` and `mlp_output_layernorm`,
and normalises the attention's and the MLP's output with them before each residual add. In a
sandwich layer the layer's own two norms keep their places, so the names map onto HF's as:
input_layernorm = input_layernorm, attention_output_layernorm = HF's post_attention_layernorm
(it normalises the attention OUTPUT), post_attention_layernorm = HF's pre_feedforward_layernorm,
mlp_output_layernorm = HF's post_feedforward_layernorm (weights.py, probes.py here). A post-norm
layer (`PostNorm`, the same switch set to post) has the output norms only: its input norm and
its norm before the MLP become identities, with no weight (OLMo-2 has neither). Plain and pipe
model share the layer, so both get it. The output norms see the sublayer's output without its
bias: a bias on the attention output or the MLP is refused (Gemma and OLMo-2 have none).
HF: none (Gemma2DecoderLayer, Gemma3DecoderLayer and Olmo2DecoderLayer have their norms in their
code; the family's spec says it).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.bias import site_bias
from porter.differences.norm_placement import rewrites as R
from porter.differences.norm_placement.probes import post_probes, sandwich_probes
from porter.differences.norm_placement.weights import post_weights, sandwich_weights
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import choice

SWITCH = "norm_placement"
FIELD = "norm.placement"
PLACEMENTS = ("pre", "sandwich", "post")
LAYER = "ParallelTransformerLayer"
# the generated code's words for the output norms, whichever placement the tree's families use
OUTPUT_NORMS = ("Output norms (sandwich, Gemma-2/3; post, OLMo-2): the attention's and the MLP's outputs are "
                "normalised before each residual add (None: a pre-norm layer).")


class NormPlacement(Difference):
    name = SWITCH
    model_switches = (SWITCH,)
    fields = {FIELD: choice("pre", *PLACEMENTS, help="norms before each sublayer (pre), before and after (sandwich), "
                                                  "or after only (post)")}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--norm-placement", "norm_placement", "sandwich", "args.norm_placement != 'pre'", NETWORK,
                (("type", "str"), ("default", "'pre'"), ("choices", repr(list(PLACEMENTS))),
                 ("help", "'Where each layer normalises: before attention and MLP (pre), before and after "
                          "both, the outputs normalised before each residual add (sandwich: Gemma-2/3), or "
                          "the outputs only (post: OLMo-2).'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] != "pre"

    def validate(self, values, given, fail):
        if values[FIELD] == "pre":
            return
        for site in ("attention_output", "mlp"):
            if site_bias(values, site):
                raise fail(f"linear.{site}_bias", f"a bias on the {site.replace('_', ' ')} with {FIELD} = "
                           f"{values[FIELD]!r}", f"set linear.{site}_bias = false (the output norm would come before "
                           "the bias the tree adds in its residual add)",
                           message=f"inconsistent spec: {values[FIELD]} norms need the sublayers' outputs without a bias")

    def plan(self, p):
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        test = p.tests[SWITCH]
        if p.spec[FIELD] == "sandwich":
            p.describe_model(f"sandwich norms ({spelling.option} sandwich): the attention's and the MLP's outputs\n"
                             "    are normalised too, before each residual add")
        p.edit(TRANSFORMER, SWITCH, f"{LAYER} builds norms for the attention's and the MLP's outputs when the "
               "switch says sandwich or post", rw(R.OutputNorms, cls=LAYER, test=test, comment=OUTPUT_NORMS))
        for output, norm in ((R.ATTENTION_OUTPUT, R.ATTENTION_NORM), (R.MLP_OUTPUT, R.MLP_NORM)):
            p.edit(TRANSFORMER, SWITCH, f"{LAYER}.forward normalises {output} before its residual add",
                   rw(R.NormalizeOutput, cls=LAYER, output=output, norm=norm, label="Output norms"))

    def weights(self, layer):
        sandwich_weights(layer)

    def probes(self, layer):
        sandwich_probes(layer)


class PostNorm(Difference):
    """The post-norm layer (OLMo-2): norm.placement = "post" on top of the output norms
    `NormPlacement` builds; nothing is normalised before attention or the MLP."""

    name = "post_norm"

    def wanted(self, spec):
        return spec[FIELD] == "post"

    def plan(self, p):
        spelling = p.switches[SWITCH]
        p.describe_model(f"post-norm ({spelling.option} post): x + norm(attn(x)), then x + norm(mlp(.)),\n"
                         "    no norm before attention or the MLP")
        p.import_into(TRANSFORMER, SWITCH, "import torch", "the identities that stand in for a post-norm layer's "
                      "input norms")
        p.edit(TRANSFORMER, SWITCH, f"{LAYER}'s norms before attention and before the MLP are identities when the "
               "switch says post", rw(R.NoInputNorms, cls=LAYER, test=f"args.{spelling.dest} == 'post'"))

    def weights(self, layer):
        post_weights(layer)

    def probes(self, layer):
        post_probes(layer)
