"""Before/after tests of the rewrite fixes the mutation run (tests/mutation) called for."""

from functools import partial

from porter.differences.bias.rewrites import LinearBias, OptionalBiasParameter
from porter.differences.gated_mlp.rewrites import SetActivation
from porter.differences.rmsnorm.rewrites import ChooseNormClass

MLP_CFG = '''
class ParallelMLP(MegatronModule):
    def __init__(self, init_method):
        super().__init__()
        cfg = get_args()
        self.dense_h_to_4h = mpu.ColumnParallelLinear(cfg.hidden_size, cfg.ffn_hidden_size, gather_output=False)
        self.activation_func = F.gelu
'''


def test_args_are_bound_where_the_tree_calls_them_cfg(check):
    source = "from megatron import get_args\n" + MLP_CFG
    after = source.replace(
        "    def __init__(self, init_method):\n",
        "    def __init__(self, init_method):\n        args = get_args()\n",
    ).replace(
        "        self.activation_func = F.gelu\n",
        "        self.activation_func = F.gelu\n        if args.swiglu:\n            self.activation_func = swiglu\n",
    )
    check(partial(SetActivation, cls="ParallelMLP", test="args.swiglu", func_name="swiglu"), source, after)


def test_args_cannot_be_bound_without_get_args(refuses):
    error = refuses(partial(SetActivation, cls="ParallelMLP", test="args.swiglu", func_name="swiglu"), MLP_CFG)
    assert "does not bind `args`" in error.found


def test_linear_bias_follows_every_parallel_linear_whatever_its_name(check):
    source = '''
class ParallelAttention(MegatronModule):
    def __init__(self):
        args = get_args()
        self.qkv = mpu.ColumnParallelLinear(h, 3 * h)
        self.out = RowParallelLinear(h, h)
'''
    after = source.replace("(h, 3 * h)", "(h, 3 * h, bias=not args.no_bias)").replace(
        "(h, h)", "(h, h, bias=not args.no_bias)")
    check(partial(LinearBias, cls="ParallelAttention", attrs=["query_key_value", "dense"],
                  bias_expr="not args.no_bias"), source, after)


SCRIPTED = '''
def bias_dropout_add(x, bias, residual, prob, training):
    out = torch.nn.functional.dropout(x + bias, p=prob, training=training)
    return residual + out


@torch.jit.script
def bias_dropout_add_fused_train(x, bias, residual, prob):
    # type: (Tensor, Tensor, Tensor, float) -> Tensor
    return bias_dropout_add(x, bias, residual, prob, True)
'''


def test_an_untyped_bias_under_torchscript_is_refused(refuses):
    error = refuses(partial(OptionalBiasParameter, func="bias_dropout_add"), SCRIPTED)
    assert "TorchScript" in error.found


def test_a_bias_annotated_tensor_is_refused(refuses):
    source = "def bias_dropout_add(x: Tensor, bias: Tensor, residual: Tensor, prob: float, training: bool):\n" \
             "    return residual + x + bias\n"
    error = refuses(partial(OptionalBiasParameter, func="bias_dropout_add"), source)
    assert "annotated `Tensor`" in error.found


def test_a_type_comment_on_the_def_line_is_retyped(check):
    source = "def helper(x, bias):  # type: (Tensor, Tensor) -> Tensor\n    return x + bias\n"
    after = "def helper(x, bias):  # type: (Tensor, Optional[Tensor]) -> Tensor\n" \
            "    return x if bias is None else x + bias\n"
    check(partial(OptionalBiasParameter, func="helper"), source, after)


def test_a_norm_site_with_a_keyword_rmsnorm_lacks_is_refused(refuses):
    source = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self):
        args = get_args()
        self.input_layernorm = LayerNorm(normalized_shape=args.hidden_size, eps=args.layernorm_epsilon)
'''
    error = refuses(partial(ChooseNormClass, cls="ParallelTransformerLayer", test="args.rms"), source)
    assert "normalized_shape" in error.found


def test_a_type_comment_after_a_docstring_is_retyped(check):
    source = 'def helper(x, bias):\n    """Add."""\n    # type: (Tensor, Tensor) -> Tensor\n    return x + bias\n'
    after = 'def helper(x, bias):\n    """Add."""\n    # type: (Tensor, Optional[Tensor]) -> Tensor\n' \
            "    return x if bias is None else x + bias\n"
    check(partial(OptionalBiasParameter, func="helper"), source, after)


def test_the_norm_choice_follows_a_local_import_of_the_norms(check):
    source = '''
class ParallelTransformer(MegatronModule):
    def __init__(self):
        args = get_args()
        from megatron.model import LayerNorm, RMSNorm
        self.final_layernorm = LayerNorm(args.hidden_size, eps=args.layernorm_epsilon)
'''
    after = source.replace(
        "        from megatron.model import LayerNorm, RMSNorm\n",
        "        from megatron.model import LayerNorm, RMSNorm\n"
        "        norm_class = RMSNorm if args.rms else LayerNorm\n",
    ).replace("= LayerNorm(args.hidden_size", "= norm_class(args.hidden_size")
    check(partial(ChooseNormClass, cls="ParallelTransformer", test="args.rms"), source, after)


def test_bias_helpers_not_typed_optional_are_found_however_typed():
    import libcst as cst

    from porter.differences.bias.detect import plain_bias_helpers

    source = '''
def bias_dropout_add(x, bias, residual, prob, training):
    """Doc."""
    # type: (Tensor, Tensor, Tensor, float, bool) -> Tensor
    return residual + x + bias

def bias_dropout_add_annotated(x: Tensor, bias: Tensor, residual: Tensor, prob: float) -> Tensor:
    return bias_dropout_add(x, bias, residual, prob, True)

def bias_dropout_add_untyped(x, bias, residual, prob):
    return bias_dropout_add(x, bias, residual, prob, True)

def bias_dropout_add_optional(x, bias, residual, prob):  # type: (Tensor, Optional[Tensor], Tensor, float) -> Tensor
    return bias_dropout_add(x, bias, residual, prob, True)

def bias_dropout_add_optional_annotation(x: Tensor, bias: Optional[Tensor], residual: Tensor, prob: float):
    return bias_dropout_add(x, bias, residual, prob, True)
'''
    assert plain_bias_helpers(cst.parse_module(source)) == (
        "bias_dropout_add", "bias_dropout_add_annotated", "bias_dropout_add_untyped")
