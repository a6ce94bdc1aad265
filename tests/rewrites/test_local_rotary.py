"""Before/after tests of the local rotary base rewrite (Gemma-3): after the attention keeps its
layer's window, or, where another class (the tree's core attention) keeps the window, with the
window computed from the attention's own layer number."""

from functools import partial

from porter.differences.local_rotary.rewrites import LocalRotaryEmbedding

KEPT = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, layer_number):
        args = get_args()
        self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, theta=args.rope_theta)
        self.sliding_window = layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)
        self.dense = mpu.RowParallelLinear(projection_size, args.hidden_size)
'''

ELSEWHERE = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, layer_number):
        args = get_args()
        self.core_attention = CoreAttention(layer_number, self.attn_mask_type)
        self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, theta=args.rope_theta)
        self.dense = mpu.RowParallelLinear(projection_size, args.hidden_size)
'''

COMMENT = ("        # Local layers' rotary base (Gemma-3): a layer under the sliding window rotates with its own "
           "base, unscaled.\n")
WINDOW = "layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)"


def test_a_windowed_layer_rotates_with_the_local_base_after_its_window_is_kept(check):
    check(partial(LocalRotaryEmbedding, cls="ParallelAttention", value="args.local_rope_theta", window=WINDOW), KEPT,
          KEPT.replace("        self.dense", COMMENT +
                       "        if self.rotary_emb is not None and self.sliding_window and args.local_rope_theta is not None:\n"
                       "            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, "
                       "theta=args.local_rope_theta)\n        self.dense"))


def test_where_the_core_attention_keeps_the_window_the_layer_computes_it(check):
    check(partial(LocalRotaryEmbedding, cls="ParallelAttention", value="args.local_rope_theta", window=WINDOW),
          ELSEWHERE,
          ELSEWHERE.replace("        self.dense", COMMENT +
                            f"        if self.rotary_emb is not None and {WINDOW} and args.local_rope_theta is not None:\n"
                            "            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, "
                            "theta=args.local_rope_theta)\n        self.dense"))


def test_without_a_window_or_a_layer_number_it_is_refused(refuses):
    source = ELSEWHERE.replace("layer_number", "index")
    error = refuses(partial(LocalRotaryEmbedding, cls="ParallelAttention", value="args.local_rope_theta",
                            window=WINDOW), source)
    assert "nor a layer_number parameter" in error.found


def test_where_the_port_scales_the_rotary_the_local_one_says_unscaled_and_the_scaling_leaves_it(check):
    """Gemma-3 4B-27B scale their global layers' rotary (linear x8): the scaling's rewrite passes
    `scaling=` to every RotaryEmbedding call that has none, so the local layers' call says
    `scaling=None` outright, and a second apply changes nothing."""
    from porter.edits.calls import AddKeyword

    from tests.rewrites.conftest import run

    local = partial(LocalRotaryEmbedding, cls="ParallelAttention", value="args.local_rope_theta", window=WINDOW,
                    unscaled="scaling")
    scaling = partial(AddKeyword, cls="ParallelAttention", func="__init__", callee="RotaryEmbedding",
                      keyword="scaling", value="rope_scaling_of(args)")
    once = run(local(), run(scaling(), KEPT))
    assert "theta=args.rope_theta, scaling=rope_scaling_of(args))" in once
    assert "theta=args.local_rope_theta, scaling=None)" in once
    assert run(local(), run(scaling(), once)) == once
