"""Before/after tests of the rewrites porter plans for BigScience-style trees (8387ae17).

Our own snippets in that tree's style: LayerNorm imported from its module under an alias
(no `from megatron.model import LayerNorm`), a GLU-aware MLP that adds its bias by hand
across a backslash continuation, a bias-dropout-add that adds the bias inside the dropout
call, a vocab-file assert with an exception for another tokenizer, and a tokenizer built
for either of two arguments.
"""

from functools import partial

from porter.differences.bias.rewrites import NoneSafeBiasAdd, OptionalBiasParameter
from porter.differences.rmsnorm.rewrites import ChooseNormClass
from porter.differences.tokenizer.rewrites import BuildTokenizerWhen, TokenizerBranch
from porter.edits.imports import InsertImport

IMPORTS = '''
from megatron import mpu
from .module import MegatronModule
from megatron.enums import AttnMaskType, LayerType, AttnType, PositionEmbeddingType
from megatron.model.fused_layer_norm import MixedFusedLayerNorm as LayerNorm
from megatron.model.fused_softmax import FusedScaleMaskSoftmax
'''


def test_rmsnorm_is_imported_from_its_module_after_the_aliased_layernorm(check):
    after = IMPORTS.replace(
        "MixedFusedLayerNorm as LayerNorm\n",
        "MixedFusedLayerNorm as LayerNorm\nfrom megatron.model.rmsnorm import RMSNorm\n",
    )
    check(partial(InsertImport, source="from megatron.model.rmsnorm import RMSNorm", after="LayerNorm"), IMPORTS, after)


LAYER = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number):
        args = get_args()

        super(ParallelTransformerLayer, self).__init__()
        # Layernorm on the input data.
        self.input_layernorm = LayerNorm(
            args.hidden_size,
            eps=args.layernorm_epsilon)
        self.self_attention = ParallelAttention(init_method, output_layer_init_method, layer_number)
'''


def test_norm_sites_follow_the_switch_under_the_alias(check):
    test = "args.layernorm_type == 'rmsnorm'"
    after = LAYER.replace(
        "        args = get_args()\n",
        f"        args = get_args()\n        norm_class = RMSNorm if {test} else LayerNorm\n",
    ).replace("self.input_layernorm = LayerNorm(", "self.input_layernorm = norm_class(")
    check(partial(ChooseNormClass, cls="ParallelTransformerLayer", test=test), LAYER, after)


MLP = '''
class ParallelMLP(MegatronModule):
    def forward(self, hidden_states):
        intermediate_parallel, bias_parallel = self.dense_h_to_4h(hidden_states)

        if self.bias_gelu_fusion:
             intermediate_parallel = \\
                     bias_gelu_impl(intermediate_parallel, bias_parallel)
        else:
            intermediate_parallel = \\
                self.activation_func(intermediate_parallel + bias_parallel)
        output, output_bias = self.dense_4h_to_h(intermediate_parallel)
        return output, output_bias
'''


def test_the_glu_mlp_adds_its_bias_only_when_there_is_one(check):
    after = MLP.replace(
        "self.activation_func(intermediate_parallel + bias_parallel)",
        "self.activation_func(intermediate_parallel if bias_parallel is None else intermediate_parallel + bias_parallel)",
    )
    check(partial(NoneSafeBiasAdd, cls="ParallelMLP", func="forward"), MLP, after)


HELPER = '''
def bias_dropout_add(x, bias, residual, prob, training):
    # type: (Tensor, Tensor, Tensor, float, bool) -> Tensor
    out = torch.nn.functional.dropout(x + bias, p=prob, training=training)
    out = residual + out
    return out
'''


def test_a_bias_added_inside_the_dropout_call_is_guarded(check):
    after = HELPER.replace("(Tensor, Tensor, Tensor, float, bool)", "(Tensor, Optional[Tensor], Tensor, float, bool)").replace(
        "dropout(x + bias,", "dropout(x if bias is None else x + bias,"
    )
    check(partial(OptionalBiasParameter, func="bias_dropout_add"), HELPER, after)


TOKENIZER = '''
def build_tokenizer(args):
    """Initialize tokenizer."""
    assert args.vocab_file is not None or args.tokenizer_type == "PretrainedFromHF"
    if args.tokenizer_type == 'GPT2BPETokenizer':
        tokenizer = _GPT2BPETokenizer(args.vocab_file, args.merge_file)
    elif args.tokenizer_type == "PretrainedFromHF":
        tokenizer = _AutoTokenizer(args.tokenizer_name_or_path)
    else:
        raise NotImplementedError(args.tokenizer_type)
    return tokenizer
'''


def test_a_vocab_assert_with_its_own_exception_is_skipped_for_sentencepiece(check):
    body = "from .sentencepiece_tokenizer import SentencePieceTokenizer\ntokenizer = SentencePieceTokenizer(args.tokenizer_model)"
    after = TOKENIZER.replace(
        '    assert args.vocab_file is not None or args.tokenizer_type == "PretrainedFromHF"\n',
        "    if args.tokenizer_type != 'SentencePieceTokenizer':\n"
        '        assert args.vocab_file is not None or args.tokenizer_type == "PretrainedFromHF"\n',
    ).replace(
        "    else:\n        raise NotImplementedError",
        "    elif args.tokenizer_type == 'SentencePieceTokenizer':\n"
        "        from .sentencepiece_tokenizer import SentencePieceTokenizer\n"
        "        tokenizer = SentencePieceTokenizer(args.tokenizer_model)\n"
        "    else:\n        raise NotImplementedError",
    )
    check(partial(TokenizerBranch, func="build_tokenizer", name="SentencePieceTokenizer", body=body), TOKENIZER, after)


GLOBAL_VARS = '''
def set_global_variables(extra_args_provider=None, args_defaults={}, ignore_unknown_args=False):
    args = _parse_args(extra_args_provider=extra_args_provider, defaults=args_defaults)
    if args.vocab_file or args.tokenizer_name_or_path:
        _ = _build_tokenizer(args)
'''


def test_the_tokenizer_is_built_for_a_model_file_too(check):
    after = GLOBAL_VARS.replace(
        "if args.vocab_file or args.tokenizer_name_or_path:",
        "if args.vocab_file or args.tokenizer_name_or_path or args.tokenizer_model:",
    )
    check(partial(BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"), GLOBAL_VARS, after)
