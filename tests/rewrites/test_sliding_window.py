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
    assert "neither porter's fused attention, a core attention" in error.found
    assert "nor a call of self.scale_mask_softmax(scores, mask)" in error.found


# A core porter keeps unfused (ALiBi added to the scores), in a method of its own, with the tree's
# inference path slicing the mask between the scores and the softmax.
HELPER = '''
class CoreAttention(MegatronModule):
    def scores_and_context(self, query_layer, key_layer, value_layer, attention_mask, get_key_value, alibi):
        scores = torch.baddbmm(alibi, query_layer, key_layer, beta=1.0, alpha=(1.0 / self.norm_factor))
        if get_key_value:
            attention_mask = attention_mask[..., :scores.size(3), :scores.size(3)]

        # probabilities
        probs = self.scale_mask_softmax(scores, attention_mask)
        return torch.bmm(probs, value_layer)
'''


def test_where_porter_keeps_the_core_unfused_the_window_goes_right_before_the_masked_softmax(check):
    check(partial(W.SlidingWindowMask, cls="CoreAttention", func="scores_and_context"), HELPER,
          HELPER.replace("\n        # probabilities\n", "\n" + MASK + "        # probabilities\n"))


def test_a_softmax_not_given_the_mask_by_name_is_refused(refuses):
    source = HELPER.replace("self.scale_mask_softmax(scores, attention_mask)",
                            "self.scale_mask_softmax(scores, mask=attention_mask)")
    error = refuses(partial(W.SlidingWindowMask, cls="CoreAttention", func="scores_and_context"), source)
    assert "not given the mask by name as its second argument" in error.found


SOFTMAX = '''
class CoreAttention(MegatronModule):
    def __init__(self, layer_number):
        self.scale_mask_softmax = FusedScaleMaskSoftmax(fp16, bf16, mask_type, fusion, mask_func, fp32, coeff)
        self.sliding_window = layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)
'''


def test_a_windowed_layer_keeps_its_softmaxs_fused_kernels_off(check):
    check(partial(W.SoftmaxFusionOff, cls="CoreAttention", softmax="scale_mask_softmax"), SOFTMAX,
          SOFTMAX + "        # Sliding-window attention: the softmax's fused causal kernel never reads the mask; a "
                    "windowed layer takes its torch path, which applies it.\n"
                    "        if self.sliding_window:\n"
                    "            self.scale_mask_softmax.scaled_masked_softmax_fusion = False\n")


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
