"""Before/after tests of the rewrites porter plans for microsoft HEAD-style trees (f4157bea).

There porter rewrites only arguments.py, for LLaMA's MLP width: the checks live in
`validate_args`, the 4h default sits in a block of its own and already has a SwiGLU
branch (rounded down to 64), and the network group holds a `group.add_argument(...),`
expression statement (a tuple). Our own snippets in that style.
"""

from functools import partial

from porter.differences.ffn_rule.rewrites import FfnHiddenSizeRule
from porter.edits.arguments import AddArguments, argument_statement

VALIDATE = '''
def validate_args(args, defaults={}):
    for key in defaults:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])

    # Checks.
    if not args.use_dataset_only:
        if args.ffn_hidden_size is None:
            if args.swiglu:
                # two thirds of 4h, a multiple of 64
                args.ffn_hidden_size = int((4 * args.hidden_size * 2 / 3) / 64) * 64
            else:
                args.ffn_hidden_size = 4 * args.hidden_size
    return args


def _add_network_size_args(parser):
    group = parser.add_argument_group(title='network size')
    group.add_argument('--swiglu', action='store_true',
                       help='Use gated linear units and SiLU activation instead of default gelu')
    group.add_argument('--untie-embeddings-and-output-weights', action='store_true',
                       help='Untie embeddings and output weights.'),
    return parser
'''


def test_the_ffn_rule_goes_first_and_the_trees_own_choice_carries_on_as_elif(check):
    after = VALIDATE.replace(
        "            if args.swiglu:\n",
        "            if args.ffn_multiple_of is not None:\n"
        "                # LLaMA: int(2/3 * 4h), times --ffn-dim-multiplier if given (LLaMA-3),\n"
        "                # rounded up to a multiple of --ffn-multiple-of\n"
        "                multiple = args.ffn_multiple_of\n"
        "                width = 8 * args.hidden_size // 3\n"
        "                if args.ffn_dim_multiplier is not None:\n"
        "                    width = int(args.ffn_dim_multiplier * width)\n"
        "                args.ffn_hidden_size = (width + multiple - 1) // multiple * multiple\n"
        "            elif args.swiglu:\n",
    )
    check(partial(FfnHiddenSizeRule, func="validate_args", dest="ffn_multiple_of", multiplier_dest="ffn_dim_multiplier"),
          VALIDATE, after)


def test_an_option_is_added_after_a_tuple_statement(check):
    statement = argument_statement("--ffn-multiple-of", type="int", default="None", help="'Round the MLP width.'")
    after = VALIDATE.replace(
        "                       help='Untie embeddings and output weights.'),\n    return parser",
        "                       help='Untie embeddings and output weights.'),\n"
        "    group.add_argument('--ffn-multiple-of',\n"
        "                       type=int,\n"
        "                       default=None,\n"
        "                       help='Round the MLP width.')\n"
        "    return parser",
    )
    check(partial(AddArguments, func="_add_network_size_args", arguments=[statement]), VALIDATE, after)
