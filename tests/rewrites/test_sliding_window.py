"""Before/after tests of the sliding-window rewrites (porter/differences/sliding_window/rewrites.py), and of the
per-site bias rewrite widening an earlier port's bias test (mistral's, then qwen2's QKV bias)."""

from functools import partial

from porter.differences.bias.rewrites import LinearBias
from porter.differences.sliding_window import rewrites as W

INIT = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, layer_number):
        args = get_args()
        self.attention_dropout = torch.nn.Dropout(args.attention_dropout)
'''

FUSED = '''
class ParallelAttention(MegatronModule):
    def forward(self, hidden_states, attention_mask, layer_past=None, get_key_value=False):
        query_layer, key_layer, value_layer = split_query_key_value(mixed, groups, hn)
        if layer_past is not None:
            key_layer = torch.cat((layer_past[0], key_layer), dim=0)

        # Fused attention where it computes what the code below computes; see fused_attention.py.
        if (layer_past is None and fused_attention_applies(query_layer, self.softmax, self.attention_dropout)):
            context_layer = fused_attention(query_layer, key_layer, value_layer, attention_mask)
        else:
            scores = torch.baddbmm(out, query_layer, key_layer, beta=0.0, alpha=(1.0 / self.norm_factor))
            probs = self.softmax(scores, attention_mask)
            context_layer = torch.bmm(probs, value_layer)
        return self.dense(context_layer)
'''

UNFUSED = '''
class ParallelAttention(MegatronModule):
    def forward(self, hidden_states, attention_mask):
        query_layer, key_layer, value_layer = split_query_key_value(mixed, groups, hn)

        # scores
        scores = torch.baddbmm(out, query_layer, key_layer, beta=0.0, alpha=(1.0 / self.norm_factor))
        probs = self.softmax(scores, attention_mask)
        context_layer = torch.bmm(probs, value_layer)
        return self.dense(context_layer)
'''

MASK = ("        # Sliding-window attention: keys older than the window are masked out too.\n"
        "        attention_mask = sliding_window_mask(attention_mask, self.sliding_window, key_layer)\n")


def test_the_attention_keeps_the_window_of_its_switch(check):
    check(partial(W.SlidingWindowAttribute, cls="ParallelAttention", value="args.sliding_window"), INIT,
          INIT + "        # Sliding-window attention: keys a query sees, itself included (None or 0: all).\n"
                 "        self.sliding_window = args.sliding_window\n")


def test_the_window_goes_on_the_mask_in_front_of_the_fused_and_the_unfused_attention(check):
    anchor = "\n        # Fused attention where"
    check(partial(W.SlidingWindowMask, cls="ParallelAttention", func="forward"), FUSED,
          FUSED.replace(anchor, "\n" + MASK + anchor.removeprefix("\n")))


def test_without_porters_fused_attention_the_window_goes_before_the_trees_core(check):
    check(partial(W.SlidingWindowMask, cls="ParallelAttention", func="forward"), UNFUSED,
          UNFUSED.replace("\n        # scores\n", "\n" + MASK + "        # scores\n"))


def test_an_attention_porter_cannot_read_is_refused_by_construct(refuses):
    source = '''
class ParallelAttention(MegatronModule):
    def forward(self, hidden_states, attention_mask):
        return self.core(hidden_states, attention_mask)
'''
    error = refuses(partial(W.SlidingWindowMask, cls="ParallelAttention", func="forward"), source)
    assert error.file == "snippet.py" and "fused_attention_applies" in error.construct
    assert "neither porter's fused attention nor a core attention" in error.found


QKV = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method):
        self.query_key_value = mpu.ColumnParallelLinear(
            args.hidden_size,
            3 * projection_size,
            bias=not args.no_bias)
        self.dense = mpu.RowParallelLinear(
            projection_size,
            args.hidden_size,
            bias=not args.no_bias)
'''


def test_a_site_that_keeps_its_bias_widens_an_earlier_ports_bias_test(check):
    """mistral's port wrote `bias=not args.no_bias`; qwen2's QKV projection keeps a bias with
    --add-qkv-bias: its test becomes the wider one, the other sites stay as they are."""
    exprs = {"query_key_value": "not args.no_bias or args.add_qkv_bias", "dense": "not args.no_bias"}
    check(partial(LinearBias, cls="ParallelAttention", attrs=list(exprs), bias_expr=exprs), QKV,
          QKV.replace("3 * projection_size,\n            bias=not args.no_bias)",
                      "3 * projection_size,\n            bias=not args.no_bias or args.add_qkv_bias)"))


def test_a_wider_bias_test_is_left_as_it_is(check):
    """qwen2 first, then mistral (no site keeps a bias): the QKV's wider test already covers it."""
    wide = QKV.replace("3 * projection_size,\n            bias=not args.no_bias)",
                       "3 * projection_size,\n            bias=not args.no_bias or args.add_qkv_bias)")
    check(partial(LinearBias, cls="ParallelAttention", attrs=["query_key_value", "dense"],
                  bias_expr="not args.no_bias"), wide, wide)
