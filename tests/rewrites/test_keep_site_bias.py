"""Before/after tests of KeepSiteBias (porter/differences/bias/rewrites.py): a site that keeps its
bias (Qwen2's QKV projection) on a tree that implements the no-bias switch itself, Megatron-LM's way
(`--disable-bias-linear`, `bias=args.add_bias_linear` on every linear). Our own snippets in that
tree's shape: the self-attention's fused projection reads `args.`, the cross-attention's `config.`.
"""

import textwrap
from functools import partial

import libcst as cst

from porter.differences.bias.detect import flag_functions
from porter.differences.bias.rewrites import KeepSiteBias, RefuseSiteBias

ATTENTION = '''
class ParallelAttention(MegatronModule):
    def __init__(self, config, layer_number, attention_type=AttnType.self_attn):
        args = get_args()
        if attention_type == AttnType.self_attn:
            self.query_key_value = tensor_parallel.ColumnParallelLinear(
                config.hidden_size,
                projection_size + 2 * kv_projection_size,
                config=config,
                bias=args.add_bias_linear,
                gather_output=False)
        else:
            self.query = tensor_parallel.ColumnParallelLinear(
                config.hidden_size, projection_size, config=config,
                bias=config.add_bias_linear, gather_output=False)
            self.key_value = tensor_parallel.ColumnParallelLinear(
                config.hidden_size, 2 * projection_size, config=config,
                bias=config.add_bias_linear, gather_output=False)
        self.dense = tensor_parallel.RowParallelLinear(
            projection_size,
            config.hidden_size,
            config=config,
            bias=args.add_bias_linear,
            input_is_parallel=True,
            skip_bias_add=True)
'''

QKV = partial(KeepSiteBias, cls="ParallelAttention", attrs=["query_key_value", "query", "key_value"],
              switch="args.add_qkv_bias")


def test_the_qkv_linears_take_the_trees_bias_or_the_sites_switch(check):
    after = (ATTENTION.replace("bias=args.add_bias_linear,\n                gather_output",
                               "bias=args.add_bias_linear or args.add_qkv_bias,\n                gather_output")
             .replace("bias=config.add_bias_linear,", "bias=config.add_bias_linear or args.add_qkv_bias,"))
    check(QKV, ATTENTION, after)
    assert after.count("or args.add_qkv_bias") == 3
    # the attention output follows the tree's one switch still
    assert "bias=args.add_bias_linear,\n            input_is_parallel=True" in after


def test_a_conditional_bias_is_parenthesised(check):
    before = ATTENTION.replace("bias=args.add_bias_linear,\n                gather_output",
                               "bias=True if args.add_bias_linear else False,\n                gather_output")
    after = (before.replace("bias=True if args.add_bias_linear else False,",
                            "bias=(True if args.add_bias_linear else False) or args.add_qkv_bias,")
             .replace("bias=config.add_bias_linear,", "bias=config.add_bias_linear or args.add_qkv_bias,"))
    check(QKV, before, after)


def test_a_kept_linear_that_hands_its_bias_back_is_refused_naming_it(refuses):
    """Broken on purpose: a QKV projection built with skip_bias_add returns its bias, and the
    attention throws it away (`mixed, _ = self.query_key_value(...)`): the kept bias would be lost."""
    source = ATTENTION.replace("bias=args.add_bias_linear,\n                gather_output=False)",
                               "bias=args.add_bias_linear,\n                skip_bias_add=True,\n"
                               "                gather_output=False)")
    error = refuses(QKV, source)
    assert "ParallelAttention.__init__" in error.construct
    assert "self.query_key_value returns its bias to the caller (skip_bias_add)" in error.found


def test_a_returned_bias_is_kept_where_the_tree_adds_whatever_comes_back(check):
    dense = partial(KeepSiteBias, cls="ParallelAttention", attrs=["dense"], switch="args.add_attention_output_bias",
                    returned_ok=True)
    after = ATTENTION.replace("bias=args.add_bias_linear,\n            input_is_parallel",
                              "bias=args.add_bias_linear or args.add_attention_output_bias,\n"
                              "            input_is_parallel")
    check(dense, ATTENTION, after)


def test_a_tree_without_the_class_is_refused(refuses):
    error = refuses(QKV, ATTENTION.replace("class ParallelAttention", "class SelfAttention"))
    assert "no ParallelAttention.__init__" in error.found


def test_a_hand_ports_own_test_is_widened_the_same_way(check):
    """Habana's hand port spells the switch `--no-bias`, its test `not args.no_bias`."""
    hand_port = "bias = not args.no_bias,"
    before = ATTENTION.replace("bias=args.add_bias_linear,", hand_port).replace("bias=config.add_bias_linear,",
                                                                                 hand_port)
    after = before.replace(hand_port, hand_port[:-1] + " or args.add_qkv_bias,", 3)
    check(QKV, before, after)


CHUNKED = '''
def launch_chunked_attention(args, config):
    """Its own QKV weight and bias, as bare parameters."""
    qkv_bias = None
    if args.add_bias_linear:
        qkv_bias = Parameter(torch.empty(3 * config.hidden_size))
    return ChunkedAttention(config, qkv_bias)
'''


def test_a_function_that_builds_a_bias_by_the_trees_flag_alone_refuses_the_sites_switch(check):
    """That path would build the model without the kept bias: it says so when the switch is on."""
    message = "--add-qkv-bias: launch_chunked_attention builds its biases by --disable-bias-linear alone"
    after = CHUNKED.replace('    qkv_bias = None\n', f"    assert not args.add_qkv_bias, {message!r}\n    qkv_bias = None\n")
    check(partial(RefuseSiteBias, func="launch_chunked_attention", switch="args.add_qkv_bias", message=message),
          CHUNKED, after)


def test_the_detector_finds_the_functions_that_test_the_flag():
    module = cst.parse_module(textwrap.dedent(CHUNKED) + "\n\ndef helper(x, bias):\n    if bias is not None:\n"
                              "        x = x + bias\n    if not config.no_bias:\n        x = x + 1\n    return x\n")
    assert flag_functions(module, ("no_bias", "add_bias_linear")) == (("launch_chunked_attention", "add_bias_linear"),
                                                                       ("helper", "no_bias"))
    assert flag_functions(module, ("other",)) == ()
