"""Post-norm placement (OLMo-2): x + norm(attn(x)), then x + norm(mlp(x)); no norm before either.

Spec: `norm.placement` (GPT: "pre", x + attn(norm(x)); OLMo-2: "post"). porter's switch:
`--norm-placement {pre,post}`. When porter adds it: each transformer layer builds two output
norms as it builds its norm after attention (`attention_output_layernorm`,
`mlp_output_layernorm`), its norms before attention and before the MLP become identities, and
forward normalises each output, its bias added, before the residual add (rewrites.py). The
final norm after the last layer stays. Plain and pipe model share the layer, so both get it.
HF: no config field; the modeling code of the family has it (OLMo-2's `post_attention_layernorm`
and `post_feedforward_layernorm`, and no `input_layernorm`).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.post_norm import rewrites as R
from porter.errors import PorterError
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import choice
from porter.weights import Weight

SWITCH = "norm_placement"
FIELD = "norm.placement"
LAYER = "ParallelTransformerLayer"
# HF model types that normalise the sublayers' outputs only (their modeling code)
HF_POST_NORM = ("olmo2",)


class PostNorm(Difference):
    name = SWITCH
    model_switches = (SWITCH,)
    fields = {FIELD: choice("pre", "pre", "post", help="where the layer's norms are: before attention and the MLP "
                                                       "(pre), or on their outputs before the residual add (post)")}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--norm-placement", "norm_placement", "post", "args.norm_placement == 'post'", NETWORK,
                (("type", "str"), ("default", "'pre'"), ("choices", "['pre', 'post']"),
                 ("help", "'Where the transformer layer normalises: pre, x + attn(norm(x)) (GPT), or post, "
                          "x + norm(attn(x)) with no norm before attention or the MLP (OLMo-2).'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] == "post"

    def plan(self, p):
        spelling = p.switch(SWITCH, on="post", field=FIELD)
        p.describe_model(f"post-norm: x + norm(attn(x)), then x + norm(mlp(x)), no norm before them ({spelling.option})")
        if p.implemented(SWITCH):
            return
        test = p.tests[SWITCH]
        p.import_into(TRANSFORMER, SWITCH, "import torch", "the identities post-norm puts in place of the input norms")
        p.edit(TRANSFORMER, SWITCH, f"{LAYER} builds norms for the outputs of attention and the MLP, its input "
               "norms identities", rw(R.OutputNorms, cls=LAYER, test=test))
        attention = f"self.{p.model.attention_attr or 'attention'}"
        for sublayer, norm, what in ((attention, R.ATTENTION_NORM, "attention"), ("self.mlp", R.MLP_NORM, "MLP")):
            p.edit(TRANSFORMER, SWITCH, f"{LAYER}.forward normalises the {what}'s output before the residual add",
                   rw(R.NormalizeOutput, cls=LAYER, sublayer=sublayer, norm=norm, what=what))

    def to_hf(self, spec, config):
        model_type = config.get("model_type")
        placed = "post" if model_type in HF_POST_NORM else "pre"
        if placed != spec[FIELD]:
            raise PorterError(
                f"{spec.hf_class or 'the spec'} places the layer's norms {placed}, the spec {spec[FIELD]}",
                file=spec.path, construct=FIELD, found=f"{FIELD} = {spec[FIELD]!r} for model type {model_type!r}",
                fix=f"set {FIELD} = {placed!r}, or name an HF class whose layers normalise that way "
                    f"(post: {', '.join(HF_POST_NORM)})",
            )

    def weights(self, layer):
        """No input norms; HF's post_attention_layernorm and post_feedforward_layernorm are the
        tree's output norms (built right after its norm after attention, which is an identity)."""
        layer.replace("input_norm", [])
        layer.replace("post_norm", [Weight(R.ATTENTION_NORM[5:] + ".weight", ("post_attention_layernorm.weight",))])
        layer.add_after("post_norm", "mlp_output_norm",
                        [Weight(R.MLP_NORM[5:] + ".weight", ("post_feedforward_layernorm.weight",))])

    def probes(self, layer):
        """The attention's output normalised (HF's post_attention_layernorm), the MLP's (its
        post_feedforward_layernorm); nothing before them."""
        layer.replace("input_norm", [])
        layer.replace("post_norm", [layer.probe(R.ATTENTION_NORM[5:], "post-norm of the attention output (before "
                                                "the residual add)", layer.ref("post_attention_layernorm"))])
        layer.add_after("mlp_out", "mlp_output_norm", [
            layer.probe(R.MLP_NORM[5:], "post-norm of the MLP output (before the residual add)",
                        layer.ref("post_feedforward_layernorm"))])
