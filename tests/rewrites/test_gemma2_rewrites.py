"""Before/after tests of Gemma-2's rewrites: the attention scale, the soft-capped scores, the sandwich
norms and each layer's window (porter/differences/attention_scale, softcap, norm_placement,
sliding_window)."""

from functools import partial

from porter.differences.attention_scale.rewrites import QueryPreAttnScalar
from porter.differences.norm_placement import rewrites as N
from porter.differences.sliding_window.rewrites import SlidingWindowAttribute
from porter.differences.softcap.rewrites import SoftcapAttribute, SoftcapScores
from tests.rewrites.test_sliding_window import FUSED, INIT, UNFUSED

SCALE = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, layer_number):
        args = get_args()
        coeff = None
        self.norm_factor = math.sqrt(self.hidden_size_per_attention_head)
        if self.apply_query_key_layer_scaling:
            coeff = self.layer_number
            self.norm_factor *= coeff
'''


def test_the_score_scale_takes_query_pre_attn_scalar_when_it_is_set(check):
    check(partial(QueryPreAttnScalar, cls="ParallelAttention", value="args.query_pre_attn_scalar"), SCALE,
          SCALE.replace("        self.norm_factor = math.sqrt(self.hidden_size_per_attention_head)\n",
                        "        # the scores are scaled by 1/sqrt(--query-pre-attn-scalar) when it is set (Gemma-2/3)\n"
                        "        self.norm_factor = math.sqrt(args.query_pre_attn_scalar or "
                        "self.hidden_size_per_attention_head)\n"))


def test_an_attention_without_norm_factor_is_refused_by_name(refuses):
    error = refuses(partial(QueryPreAttnScalar, cls="ParallelAttention", value="args.x"), INIT)
    assert "math.sqrt" in error.found


CAP = "        attention_scores = softcap_scores(attention_scores, self.attention_softcap, self.softmax)\n"


def test_the_attention_keeps_its_cap(check):
    check(partial(SoftcapAttribute, cls="ParallelAttention", value="args.attention_softcap"), INIT,
          INIT + "        # Soft-capped attention scores (Gemma-2): cap * tanh(scores / cap); None: none.\n"
                 "        self.attention_softcap = args.attention_softcap\n")


def test_capped_scores_keep_the_fused_kernel_out_and_go_into_the_trees_own_attention(check):
    """The fused branch runs only without a cap; the tree's code caps its scores before the softmax."""
    after = FUSED.replace(
        "        if (layer_past is None and fused_attention_applies",
        "        if self.attention_softcap is None and (layer_past is None and fused_attention_applies",
    ).replace(
        "            probs = self.softmax(scores, attention_mask)\n",
        "            # Soft-capped scores (Gemma-2): cap * tanh(scores / cap), before the mask and softmax.\n"
        "            scores = softcap_scores(scores, self.attention_softcap, self.softmax)\n"
        "            probs = self.softmax(scores, attention_mask)\n")
    check(partial(SoftcapScores, cls="ParallelAttention", func="forward", softmax="softmax"), FUSED, after)


def test_capped_scores_in_an_attention_porter_did_not_fuse(check):
    after = UNFUSED.replace(
        "        probs = self.softmax(scores, attention_mask)\n",
        "        # Soft-capped scores (Gemma-2): cap * tanh(scores / cap), before the mask and softmax.\n"
        "        scores = softcap_scores(scores, self.attention_softcap, self.softmax)\n"
        "        probs = self.softmax(scores, attention_mask)\n")
    check(partial(SoftcapScores, cls="ParallelAttention", func="forward", softmax="softmax"), UNFUSED, after)


LAYER = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, layer_number):
        args = get_args()
        norm_class = RMSNorm if args.layernorm_type == 'rmsnorm' else LayerNorm
        self.input_layernorm = norm_class(
            args.hidden_size,
            eps=args.layernorm_epsilon)
        self.attention = ParallelAttention(init_method, layer_number)
        self.post_attention_layernorm = norm_class(
            args.hidden_size,
            eps=args.layernorm_epsilon)
        self.mlp = ParallelMLP(init_method)

    def forward(self, hidden_states, attention_mask, get_key_value=False):
        layernorm_output = self.input_layernorm(hidden_states)
        attention_output, attention_bias = \\
            self.attention(layernorm_output, attention_mask, get_key_value=get_key_value)

        if get_key_value:
            attention_output, presents = attention_output

        residual = hidden_states

        with torch.enable_grad():
            layernorm_input = bias_dropout_add_func(attention_output, attention_bias, residual, self.hidden_dropout)

        layernorm_output = self.post_attention_layernorm(layernorm_input)
        mlp_output, mlp_bias = self.mlp(layernorm_output)
        residual = layernorm_input
        with torch.enable_grad():
            output = bias_dropout_add_func(mlp_output, mlp_bias, residual, self.hidden_dropout)
        return output
'''


def test_sandwich_norms_are_built_like_the_post_attention_norm_and_applied_before_each_residual_add(check, chain):
    sandwich = chain(partial(N.OutputNorms, cls="ParallelTransformerLayer", test="args.norm_placement == 'sandwich'"),
                     partial(N.NormalizeOutput, cls="ParallelTransformerLayer", output="attention_output",
                             norm="attention_output_layernorm"),
                     partial(N.NormalizeOutput, cls="ParallelTransformerLayer", output="mlp_output",
                             norm="mlp_output_layernorm"))
    after = LAYER.replace(
        "        self.mlp = ParallelMLP(init_method)\n",
        "        # Sandwich norms (Gemma-2/3): the attention's and the MLP's outputs are normalised before each "
        "residual add (None: a pre-norm layer).\n"
        "        self.attention_output_layernorm = None\n"
        "        self.mlp_output_layernorm = None\n"
        "        if args.norm_placement == 'sandwich':\n"
        "            self.attention_output_layernorm = norm_class(args.hidden_size, eps=args.layernorm_epsilon)\n"
        "            self.mlp_output_layernorm = norm_class(args.hidden_size, eps=args.layernorm_epsilon)\n"
        "        self.mlp = ParallelMLP(init_method)\n",
    ).replace(
        "        residual = hidden_states\n\n        with torch.enable_grad():\n",
        "        residual = hidden_states\n\n"
        "        if self.attention_output_layernorm is not None:\n"
        "            # Sandwich norms: the attention output is normalised before the residual add.\n"
        "            attention_output = self.attention_output_layernorm(attention_output)\n"
        "        with torch.enable_grad():\n",
    ).replace(
        "        residual = layernorm_input\n        with torch.enable_grad():\n",
        "        residual = layernorm_input\n"
        "        if self.mlp_output_layernorm is not None:\n"
        "            # Sandwich norms: the mlp output is normalised before the residual add.\n"
        "            mlp_output = self.mlp_output_layernorm(mlp_output)\n"
        "        with torch.enable_grad():\n",
    )
    check(sandwich, LAYER, after)


POST_NORM = ("        self.post_attention_layernorm = norm_class(\n            args.hidden_size,\n"
             "            eps=args.layernorm_epsilon)\n")
BRANCHED = LAYER.replace(POST_NORM,
                         "        # norm per type\n"
                         "        if args.rms:\n            self.post_attention_layernorm = RMSNorm(args.hidden_size)\n"
                         "        elif args.fused:\n"
                         "            if args.persist:\n"
                         "                self.post_attention_layernorm = FusedLayerNorm(\n"
                         "                    args.hidden_size, persist=True)\n"
                         "            else:\n"
                         "                self.post_attention_layernorm = FusedLayerNorm(args.hidden_size)\n"
                         "        else:\n            raise ValueError(args.normalization)\n")


def test_a_norm_built_in_branches_has_its_output_norms_built_in_each_branch_by_its_call(check):
    """Nested and elif branches each build them after their own norm; the branch that raises builds
    nothing; the None defaults go before the if (the if keeps its comment)."""
    def built(indent, call):
        pad = " " * indent
        return (f"{pad}if args.norm_placement == 'sandwich':\n"
                f"{pad}    self.attention_output_layernorm = {call}\n"
                f"{pad}    self.mlp_output_layernorm = {call}\n")

    after = BRANCHED.replace(
        "        # norm per type\n",
        "        # Sandwich norms (Gemma-2/3): the attention's and the MLP's outputs are normalised before each "
        "residual add (None: a pre-norm layer).\n"
        "        self.attention_output_layernorm = None\n"
        "        self.mlp_output_layernorm = None\n"
        "        # norm per type\n",
    ).replace(
        "            self.post_attention_layernorm = RMSNorm(args.hidden_size)\n",
        "            self.post_attention_layernorm = RMSNorm(args.hidden_size)\n" + built(12, "RMSNorm(args.hidden_size)"),
    ).replace(
        "                    args.hidden_size, persist=True)\n",
        "                    args.hidden_size, persist=True)\n" + built(16, "FusedLayerNorm(args.hidden_size, persist=True)"),
    ).replace(
        "                self.post_attention_layernorm = FusedLayerNorm(args.hidden_size)\n",
        "                self.post_attention_layernorm = FusedLayerNorm(args.hidden_size)\n"
        + built(16, "FusedLayerNorm(args.hidden_size)"),
    )
    check(partial(N.OutputNorms, cls="ParallelTransformerLayer", test="args.norm_placement == 'sandwich'"),
          BRANCHED, after)


def test_a_norm_branch_that_goes_on_without_the_norm_is_refused_by_name(refuses):
    branched = LAYER.replace(POST_NORM, "        if args.rms:\n            self.post_attention_layernorm = RMSNorm(args.hidden_size)\n"
                                        "        elif args.fused:\n            self.post_attention_layernorm = FusedLayerNorm(args.hidden_size)\n")
    error = refuses(partial(N.OutputNorms, cls="ParallelTransformerLayer", test="True"), branched)
    assert error.found == ("`if args.rms:` assigns self.post_attention_layernorm, but `elif args.fused:` has no else, "
                           "so one path builds no self.post_attention_layernorm")


def test_the_output_is_normalised_before_the_if_else_around_its_residual_add(check):
    """A tree whose residual add sits in an if/else, one branch adding the bias to the output first
    (microsoft's late layout): that statement uses the output, the norm goes before it."""
    forward = LAYER.replace(
        "        with torch.enable_grad():\n"
        "            layernorm_input = bias_dropout_add_func(attention_output, attention_bias, residual, self.hidden_dropout)\n",
        "        if not self.fpdt:\n"
        "            with torch.enable_grad():\n"
        "                layernorm_input = bias_dropout_add_func(attention_output, attention_bias, residual, 0.0)\n"
        "        else:\n"
        "            attention_output = attention_output + attention_bias\n"
        "            layernorm_input = attention_output + residual\n")
    after = forward.replace(
        "        residual = hidden_states\n\n        if not self.fpdt:\n",
        "        residual = hidden_states\n\n"
        "        if self.attention_output_layernorm is not None:\n"
        "            # Sandwich norms: the attention output is normalised before the residual add.\n"
        "            attention_output = self.attention_output_layernorm(attention_output)\n"
        "        if not self.fpdt:\n")
    check(partial(N.NormalizeOutput, cls="ParallelTransformerLayer", output="attention_output",
                  norm="attention_output_layernorm"), forward, after)


WINDOW = "layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)"
INIT_LAYER = INIT.replace("        args = get_args()\n",
                          "        args = get_args()\n        self.layer_number = max(1, layer_number)\n")


def test_each_layer_keeps_its_own_window(check):
    check(partial(SlidingWindowAttribute, cls="ParallelAttention", value=WINDOW), INIT_LAYER,
          INIT_LAYER + "        # Sliding-window attention: keys a query sees, itself included (None or 0: all); "
                       "every N-th layer has none (--sliding-window-pattern).\n"
                       f"        self.sliding_window = {WINDOW}\n")


def test_an_earlier_ports_window_line_becomes_the_per_layer_one(check):
    """A tree Mistral was ported into before keeps one window line, now with the layer's window."""
    earlier = INIT_LAYER + "        # Sliding-window attention: keys a query sees, itself included (None or 0: all).\n" \
                           "        self.sliding_window = args.sliding_window\n"
    check(partial(SlidingWindowAttribute, cls="ParallelAttention", value=WINDOW), earlier,
          earlier.replace("self.sliding_window = args.sliding_window", f"self.sliding_window = {WINDOW}"))


def test_a_per_layer_window_needs_the_layer_number(refuses):
    error = refuses(partial(SlidingWindowAttribute, cls="ParallelAttention", value=WINDOW), INIT)
    assert "layer_number" in error.found
