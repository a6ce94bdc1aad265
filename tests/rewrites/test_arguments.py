"""Before/after tests of the arguments.py rewrites, on snippets in MS-pre's style."""

from functools import partial

from porter.differences.ffn_rule.rewrites import FfnHiddenSizeRule, KeepRuleWidth, width_guarded, width_unguarded
from porter.edits.arguments import AddArguments, ExtendChoices, InsertChecks, argument_statement

PARSE = '''
def parse_args(extra_args_provider=None, defaults={}, ignore_unknown_args=False):
    parser = argparse.ArgumentParser(description='Megatron-LM Arguments', allow_abbrev=False)
    parser = _add_network_size_args(parser)
    args = parser.parse_args()
    for key in defaults:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])

    required_args = ['num_layers', 'hidden_size']
    if args.ffn_hidden_size is None:
        args.ffn_hidden_size = 4 * args.hidden_size
    return args


def _add_network_size_args(parser):
    group = parser.add_argument_group(title='network size')
    group.add_argument('--hidden-size', type=int, default=None,
                       help='Tansformer hidden size.')
    return parser


def _add_data_args(parser):
    group = parser.add_argument_group(title='data and dataloader')
    group.add_argument('--tokenizer-type', type=str,
                       default=None,
                       choices=['BertWordPieceLowerCase',
                                'GPT2BPETokenizer'],
                       help='What type of tokenizer to use.')
    return parser
'''


def test_add_arguments_before_return_aligned_like_the_tree(check):
    statement = argument_statement("--no-bias", action="'store_true'", help="'No bias.'")
    after = PARSE.replace(
        "                       help='Tansformer hidden size.')\n    return parser",
        "                       help='Tansformer hidden size.')\n"
        "    group.add_argument('--no-bias',\n"
        "                       action='store_true',\n"
        "                       help='No bias.')\n"
        "    return parser",
    )
    check(partial(AddArguments, func="_add_network_size_args", arguments=[statement]), PARSE, after)


def test_add_arguments_skips_an_option_already_there(check):
    statement = argument_statement("--hidden-size", type="int")
    check(partial(AddArguments, func="_add_network_size_args", arguments=[statement]), PARSE, PARSE)


def test_extend_choices_keeps_the_list_layout(check):
    after = PARSE.replace(
        "                                'GPT2BPETokenizer'],",
        "                                'GPT2BPETokenizer',\n                                'SentencePieceTokenizer'],",
    )
    check(
        partial(ExtendChoices, func="_add_data_args", option="--tokenizer-type", value="SentencePieceTokenizer"),
        PARSE,
        after,
    )


def test_insert_checks_after_the_defaults_loop(check):
    checks = ["if args.no_bias:\n    args.bias_gelu_fusion = False"]
    after = PARSE.replace(
        "            setattr(args, key, defaults[key])\n",
        "            setattr(args, key, defaults[key])\n\n    if args.no_bias:\n        args.bias_gelu_fusion = False\n",
    )
    check(partial(InsertChecks, func="parse_args", checks=checks), PARSE, after)


def test_ffn_rule_wraps_the_4h_default(check):
    after = PARSE.replace(
        "    if args.ffn_hidden_size is None:\n        args.ffn_hidden_size = 4 * args.hidden_size\n",
        "    if args.ffn_hidden_size is None:\n"
        "        if args.ffn_multiple_of is not None:\n"
        "            # LLaMA: int(2/3 * 4h), times --ffn-dim-multiplier if given (LLaMA-3),\n"
        "            # rounded up to a multiple of --ffn-multiple-of\n"
        "            multiple = args.ffn_multiple_of\n"
        "            width = 8 * args.hidden_size // 3\n"
        "            if args.ffn_dim_multiplier is not None:\n"
        "                width = int(args.ffn_dim_multiplier * width)\n"
        "            args.ffn_hidden_size = (width + multiple - 1) // multiple * multiple\n"
        "        else:\n"
        "            args.ffn_hidden_size = 4 * args.hidden_size\n",
    )
    check(partial(FfnHiddenSizeRule, func="parse_args", dest="ffn_multiple_of", multiplier_dest="ffn_dim_multiplier"),
          PARSE, after)


def test_ffn_rule_gives_llamas_11008():
    hidden_size, multiple = 4096, 256
    assert (8 * hidden_size // 3 + multiple - 1) // multiple * multiple == 11008


def test_checks_need_the_defaults_loop_or_the_derived_widths(refuses):
    source = PARSE.replace("for key in defaults:", "for key in other:")
    assert "if args.ffn_hidden_size is None:" in source
    error = refuses(partial(InsertChecks, func="parse_args", checks=["x = 1"]),
                    source.replace("if args.ffn_hidden_size is None:", "if not args.ffn_hidden_size:"))
    assert "for key in defaults" in error.construct


def test_without_the_loop_checks_go_before_the_block_that_derives_the_widths(check):
    """microsoft since December 2023 (OpenLLM-France, deep-spin): the defaults are applied in
    initialize_megatron and the derived widths sit in `if not args.use_dataset_only:`."""
    source = PARSE.replace("for key in defaults:", "for key in other:").replace(
        "    required_args = ['num_layers', 'hidden_size']\n    if args.ffn_hidden_size is None:\n"
        "        args.ffn_hidden_size = 4 * args.hidden_size\n",
        "    if not args.use_dataset_only:\n        required_args = ['num_layers', 'hidden_size']\n"
        "        if args.ffn_hidden_size is None:\n            args.ffn_hidden_size = 4 * args.hidden_size\n")
    after = source.replace("\n\n    if not args.use_dataset_only:\n", "\n\n    x = 1\n\n    if not args.use_dataset_only:\n")
    check(partial(InsertChecks, func="parse_args", checks=["x = 1"]), source, after)


SWIGLU_OVERRIDE = PARSE.replace(
    "        args.ffn_hidden_size = 4 * args.hidden_size\n    return args\n",
    "        args.ffn_hidden_size = 4 * args.hidden_size\n\n"
    "    if args.swiglu:\n"
    "        args.ffn_hidden_size = int((4 * args.hidden_size * 2 / 3) / 64) * 64\n"
    "    return args\n")


def test_a_width_override_under_another_switch_is_found_outside_the_default_only():
    """microsoft 9e72d571 sets the swiglu width after the `is None` default, whatever was given;
    microsoft HEAD does it inside the default (a default, not an override)."""
    import libcst as cst

    from porter.profile.arguments import read_arguments

    assert read_arguments("megatron/arguments.py", cst.parse_module(SWIGLU_OVERRIDE)).width_overrides == ("args.swiglu",)
    inside = PARSE.replace(
        "        args.ffn_hidden_size = 4 * args.hidden_size\n",
        "        if args.swiglu:\n            args.ffn_hidden_size = int((4 * args.hidden_size * 2 / 3) / 64) * 64\n"
        "        else:\n            args.ffn_hidden_size = 4 * args.hidden_size\n")
    assert read_arguments("megatron/arguments.py", cst.parse_module(inside)).width_overrides == ()


def test_the_override_is_skipped_when_the_rule_is_on(check):
    after = SWIGLU_OVERRIDE.replace(
        "    if args.swiglu:\n",
        "    # the MLP width rule (or a given --ffn-hidden-size) stands when its switch is on\n"
        "    if args.swiglu and args.ffn_multiple_of is None:\n")
    check(partial(KeepRuleWidth, func="parse_args", test="args.swiglu", dest="ffn_multiple_of"),
          SWIGLU_OVERRIDE, after)
    assert width_unguarded("args.swiglu and args.ffn_multiple_of is None", "ffn_multiple_of") == "args.swiglu"
    assert width_guarded("args.a or args.b", "x") == "(args.a or args.b) and args.x is None"
    assert width_unguarded("(args.a or args.b) and args.x is None", "x") == "args.a or args.b"


def test_the_rule_and_an_explicit_width_stand_against_the_override():
    """The rewritten checks, run: LLaMA's 11008 at h = 4096 (the override gave 10880), and a
    given --ffn-hidden-size is kept; without the rule the tree's swiglu width is as before."""
    from types import SimpleNamespace

    from tests.rewrites.conftest import run

    rule = FfnHiddenSizeRule(func="parse_args", dest="ffn_multiple_of", multiplier_dest="ffn_dim_multiplier")
    source = run(KeepRuleWidth(func="parse_args", test="args.swiglu", dest="ffn_multiple_of"),
                 run(rule, SWIGLU_OVERRIDE))
    checks = source.split("def _add_network_size_args")[0].replace(
        "def parse_args(extra_args_provider=None, defaults={}, ignore_unknown_args=False):\n"
        "    parser = argparse.ArgumentParser(description='Megatron-LM Arguments', allow_abbrev=False)\n"
        "    parser = _add_network_size_args(parser)\n    args = parser.parse_args()\n",
        "def parse_args(args, defaults={}):\n")
    namespace: dict = {}
    exec(compile(checks, "<checks>", "exec"), namespace)

    def width(**given):
        args = SimpleNamespace(**{"hidden_size": 4096, "swiglu": True, "ffn_multiple_of": None,
                                  "ffn_dim_multiplier": None, "ffn_hidden_size": None, **given})
        return namespace["parse_args"](args).ffn_hidden_size

    assert width() == 10880  # the tree's own swiglu width, unchanged for its own models
    assert width(ffn_multiple_of=256) == 11008
    assert width(ffn_multiple_of=256, ffn_hidden_size=12000) == 12000
