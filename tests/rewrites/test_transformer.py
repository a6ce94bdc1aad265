"""Before/after tests of the transformer.py rewrites, on small snippets in MS-pre's style."""

from functools import partial

from porter.differences.bias.rewrites import LinearBias, NoneSafeBiasAdd, NoneSafeExpandAs, OptionalBiasParameter
from porter.differences.gated_mlp.rewrites import FusedGateUp, SetActivation
from porter.differences.rmsnorm.rewrites import ChooseNormClass
from porter.differences.rotary.rewrites import AddRotaryEmbedding, ApplyRotaryEmbedding

MLP = '''
class ParallelMLP(MegatronModule):
    def __init__(self, init_method, output_layer_init_method):
        super(ParallelMLP, self).__init__()
        args = get_args()
        self.dense_h_to_4h = mpu.ColumnParallelLinear(
            args.hidden_size,
            args.ffn_hidden_size,
            gather_output=False,
            init_method=init_method,
            skip_bias_add=True)
        self.activation_func = F.gelu
        if args.openai_gelu:
            self.activation_func = openai_gelu
        elif args.onnx_safe:
            self.activation_func = erf_gelu
        self.dense_4h_to_h = mpu.RowParallelLinear(
            args.ffn_hidden_size, args.hidden_size, input_is_parallel=True,
            init_method=output_layer_init_method, skip_bias_add=True)

    def forward(self, hidden_states):
        intermediate_parallel, bias_parallel = self.dense_h_to_4h(hidden_states)
        if self.bias_gelu_fusion:
            intermediate_parallel = bias_gelu_impl(intermediate_parallel, bias_parallel)
        else:
            intermediate_parallel = self.activation_func(intermediate_parallel + bias_parallel)
        output, output_bias = self.dense_4h_to_h(intermediate_parallel)
        return output, output_bias
'''


def test_linear_bias_adds_kwarg_in_the_calls_layout(check):
    check(
        partial(LinearBias, cls="ParallelMLP", attrs=["dense_h_to_4h", "dense_4h_to_h"], bias_expr="not args.no_bias"),
        MLP,
        MLP.replace(
            "            skip_bias_add=True)\n        self.activation_func",
            "            skip_bias_add=True,\n            bias=not args.no_bias)\n        self.activation_func",
        ).replace(
            "init_method=output_layer_init_method, skip_bias_add=True)",
            "init_method=output_layer_init_method, skip_bias_add=True, bias=not args.no_bias)",
        ),
    )


def test_linear_bias_leaves_an_explicit_bias_alone(check):
    source = MLP.replace("skip_bias_add=True)\n        self.activation", "skip_bias_add=True, bias=False)\n        self.activation")
    out = source.replace(
        "init_method=output_layer_init_method, skip_bias_add=True)",
        "init_method=output_layer_init_method, skip_bias_add=True, bias=not args.no_bias)",
    )
    check(partial(LinearBias, cls="ParallelMLP", attrs=["dense_h_to_4h", "dense_4h_to_h"], bias_expr="not args.no_bias"), source, out)


def test_fused_gate_up_doubles_width_with_stride(check):
    test = "args.activation_func_type == 'swiglu'"
    after = MLP.replace(
        "        args = get_args()\n        self.dense_h_to_4h",
        "        args = get_args()\n"
        "        # Gated MLP: one fused gate+up projection, 2*ffn wide. On each tensor-parallel\n"
        "        # rank the first half of its output is the gate, the second half the up projection.\n"
        f"        gate_and_up = 2 if {test} else 1\n"
        "        self.dense_h_to_4h",
    ).replace(
        "            args.ffn_hidden_size,\n            gather_output=False,\n            init_method=init_method,\n            skip_bias_add=True)",
        "            gate_and_up * args.ffn_hidden_size,\n            gather_output=False,\n            init_method=init_method,\n            skip_bias_add=True,\n            stride=gate_and_up)",
    )
    check(partial(FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=test), MLP, after)


def test_set_activation_goes_after_the_trees_choice(check):
    test = "args.activation_func_type == 'swiglu'"
    after = MLP.replace(
        "            self.activation_func = erf_gelu\n",
        f"            self.activation_func = erf_gelu\n        if {test}:\n            self.activation_func = swiglu\n",
    )
    check(partial(SetActivation, cls="ParallelMLP", test=test, func_name="swiglu"), MLP, after)


def test_none_safe_bias_add(check):
    after = MLP.replace(
        "self.activation_func(intermediate_parallel + bias_parallel)",
        "self.activation_func(intermediate_parallel if bias_parallel is None else intermediate_parallel + bias_parallel)",
    )
    check(partial(NoneSafeBiasAdd, cls="ParallelMLP", func="forward"), MLP, after)


HELPERS = '''
def bias_dropout_add(x, bias, residual, prob, training):
    # type: (Tensor, Tensor, Tensor, float, bool) -> Tensor
    out = torch.nn.functional.dropout(x + bias, p=prob, training=training)
    out = residual + out
    return out


@torch.jit.script
def bias_dropout_add_fused_train(x, bias, residual, prob):
    # type: (Tensor, Tensor, Tensor, float) -> Tensor
    return bias_dropout_add(x, bias, residual, prob, True)
'''


def test_optional_bias_parameter_types_and_guards(check):
    after = HELPERS.replace(
        "# type: (Tensor, Tensor, Tensor, float, bool) -> Tensor",
        "# type: (Tensor, Optional[Tensor], Tensor, float, bool) -> Tensor",
    ).replace("dropout(x + bias,", "dropout(x if bias is None else x + bias,")
    check(partial(OptionalBiasParameter, func="bias_dropout_add"), HELPERS, after)
    after2 = HELPERS.replace(
        "# type: (Tensor, Tensor, Tensor, float) -> Tensor", "# type: (Tensor, Optional[Tensor], Tensor, float) -> Tensor"
    )
    check(partial(OptionalBiasParameter, func="bias_dropout_add_fused_train"), HELPERS, after2)


def test_optional_bias_is_accepted_by_torchscript(tmp_path, monkeypatch):
    import importlib

    import torch

    from tests.rewrites.conftest import run

    source = run(OptionalBiasParameter(func="bias_dropout_add"), "import torch\n" + HELPERS)
    source = run(OptionalBiasParameter(func="bias_dropout_add_fused_train"), source)
    (tmp_path / "scripted_helpers.py").write_text(source)  # TorchScript reads the source file
    monkeypatch.syspath_prepend(str(tmp_path))
    helpers = importlib.import_module("scripted_helpers")
    x = torch.ones(2, 3)
    out = helpers.bias_dropout_add_fused_train(x, None, x, 0.0)
    assert torch.equal(out, 2 * x)
    out = helpers.bias_dropout_add_fused_train(x, torch.ones(3), x, 0.0)
    assert torch.equal(out, 3 * x)


LAYER = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number):
        args = get_args()
        super(ParallelTransformerLayer, self).__init__()
        self.input_layernorm = LayerNorm(
            args.hidden_size,
            eps=args.layernorm_epsilon)
        self.attention = ParallelAttention(init_method, output_layer_init_method, layer_number)
        self.post_attention_layernorm = LayerNorm(args.hidden_size, eps=args.layernorm_epsilon)

    def forward(self, hidden_states, attention_mask=None):
        layernorm_output = self.input_layernorm(hidden_states)
        attention_output, attention_bias = self.attention(layernorm_output, attention_mask)
        residual = hidden_states
        with torch.enable_grad():
            layernorm_input = bias_dropout_add_func(
                attention_output,
                attention_bias.expand_as(residual),
                residual,
                self.hidden_dropout)
        return layernorm_input
'''


def test_choose_norm_class_at_every_site(check):
    test = "args.layernorm_type == 'rmsnorm'"
    after = LAYER.replace(
        "        args = get_args()\n        super(",
        f"        args = get_args()\n        norm_class = RMSNorm if {test} else LayerNorm\n        super(",
    ).replace("= LayerNorm(", "= norm_class(")
    check(partial(ChooseNormClass, cls="ParallelTransformerLayer", test=test), LAYER, after)


def test_none_safe_expand_as(check):
    after = LAYER.replace(
        "attention_bias.expand_as(residual),",
        "attention_bias.expand_as(residual) if attention_bias is not None else None,",
    )
    check(partial(NoneSafeExpandAs, cls="ParallelTransformerLayer", func="forward"), LAYER, after)


ATTENTION = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number):
        args = get_args()
        self.hidden_size_per_attention_head = mpu.divide(projection_size, args.num_attention_heads)
        self.dense = mpu.RowParallelLinear(projection_size, args.hidden_size)

    def forward(self, hidden_states, attention_mask, layer_past=None):
        if self.attention_type == AttnType.self_attn:
            mixed_x_layer, _ = self.query_key_value(hidden_states)
            (query_layer,
             key_layer,
             value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)
        if layer_past is not None:
            past_key, past_value = layer_past
        return query_layer, key_layer
'''


def test_rotary_is_built_and_applied_after_the_qkv_split(check):
    test = "args.position_embedding_type == 'rotary'"
    after = ATTENTION.replace(
        "        self.dense = mpu.RowParallelLinear(projection_size, args.hidden_size)\n",
        "        self.dense = mpu.RowParallelLinear(projection_size, args.hidden_size)\n"
        "        # Rotary position embedding (applied to query and key in forward).\n"
        "        self.rotary_emb = None\n"
        f"        if {test}:\n"
        "            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, theta=args.rope_theta)\n",
    ).replace(
        "        if layer_past is not None:\n            past_key",
        "        # Rotary position embedding: rotate query and key [sq, b, np, hn].\n"
        "        if self.rotary_emb is not None:\n"
        "            offset = 0 if layer_past is None else layer_past[0].size(0)  # cached keys are rotated already\n"
        "            query_layer, key_layer = self.rotary_emb(query_layer, key_layer, offset=offset)\n"
        "        if layer_past is not None:\n            past_key",
    )
    make_init = partial(AddRotaryEmbedding, cls="ParallelAttention", test=test,
                        head_dim="self.hidden_size_per_attention_head", theta="args.rope_theta")
    make_apply = partial(ApplyRotaryEmbedding, cls="ParallelAttention", func="forward")
    from tests.rewrites.conftest import run

    both = run(make_apply(), run(make_init(), ATTENTION))
    assert both == after.lstrip("\n")
    check(make_init, ATTENTION, run(make_init(), ATTENTION))


def test_missing_anchor_names_the_construct_and_what_is_there(refuses):
    error = refuses(partial(FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test="t"),
                    MLP.replace("class ParallelMLP", "class FeedForward"))
    assert error.file == "snippet.py"
    assert "ParallelMLP.__init__" in error.construct
    assert "FeedForward" in error.found


def test_missing_inner_anchor_says_what_the_function_lacks(refuses):
    error = refuses(partial(ApplyRotaryEmbedding, cls="ParallelAttention", func="forward"),
                    ATTENTION.replace("query_layer,\n", "q,\n").replace("return query_layer", "return q"))
    assert "query_layer" in error.found
