"""The local layers' rotary embedding on a tree that hands every layer the global angles (microsoft
HEAD's shape), under a scaled global rotary (Gemma-3 4B and larger: linear 8): built with the
scaling passed None, so that rope scaling's pass over every builder of the class (a second apply
reads the ported tree) leaves it unscaled, as HF's sliding layers are."""

from functools import partial

from porter.differences.local_rotary.handed import LocalRotaryBuilt
from porter.edits.calls import AddKeyword

WINDOW = "layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)"
HANDED = '''
class ParallelAttention(MegatronModule):
    def __init__(self, config, layer_number):
        args = get_args()
        self.hidden_size_per_attention_head = args.kv_channels
'''
BUILT = HANDED + (
    "        # Local layers' rotary base (Gemma-3): a layer under the sliding window rotates with its own base, "
    "unscaled (the tree hands every layer the global angles).\n"
    "        self.local_rotary_pos_emb = None\n"
    f"        if args.local_rope_theta is not None and {WINDOW}:\n"
    "            self.local_rotary_pos_emb = RotaryEmbedding(self.hidden_size_per_attention_head, "
    "theta=args.local_rope_theta, scaling=None)\n")


def test_a_local_layer_builds_its_rotary_unscaled_and_rope_scaling_leaves_it_so(check, chain):
    built = partial(LocalRotaryBuilt, cls="ParallelAttention", value="args.local_rope_theta", window=WINDOW,
                    unscaled="scaling")
    scaled = partial(AddKeyword, cls="ParallelAttention", func="__init__", callee="RotaryEmbedding",
                     keyword="scaling", value="rope_scaling_of(args)")
    check(built, HANDED, BUILT)
    check(chain(built, scaled), HANDED, BUILT)
