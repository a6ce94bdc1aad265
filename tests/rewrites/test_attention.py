"""Before/after tests of the fused core attention rewrite and its detector, on snippets we wrote
in the style of microsoft f01c9e6e (inline in ParallelAttention.forward, with a key/value cache)
and of microsoft HEAD (a CoreAttention module)."""

from functools import partial

import libcst as cst

from porter.differences.fused_attention.rewrites import FusedCoreAttention
from porter.profile.attention import AttentionSite, find_core_attention

INIT = '''
    def __init__(self, layer_number):
        super().__init__()
        self.norm_factor = math.sqrt(self.head_dim)
        self.scale_mask_softmax = FusedScaleMaskSoftmax(
            self.fp16, self.bf16, self.attn_mask_type, args.masked_softmax_fusion,
            attention_mask_func, self.attention_softmax_in_fp32, coeff)
        self.attention_dropout = torch.nn.Dropout(args.attention_dropout)
'''

INLINE = '''
class ParallelAttention(MegatronModule):
''' + INIT + '''
    def forward(self, hidden_states, attention_mask, layer_past=None, get_key_value=False):
        query_layer, key_layer, value_layer = split(self.query_key_value(hidden_states))
        if layer_past is not None:
            key_layer = torch.cat((layer_past[0], key_layer), dim=0)
            value_layer = torch.cat((layer_past[1], value_layer), dim=0)
        if get_key_value:
            present = (key_layer, value_layer)

        # raw scores [b, np, sq, sk]
        output_size = (query_layer.size(1), query_layer.size(2), query_layer.size(0), key_layer.size(0))
        matmul_result = torch.baddbmm(
            buffer, query_layer.transpose(0, 1),
            key_layer.transpose(0, 1).transpose(1, 2),
            beta=0.0, alpha=(1.0/self.norm_factor))
        attention_probs = self.scale_mask_softmax(matmul_result.view(*output_size), attention_mask)
        with mpu.get_cuda_rng_tracker().fork():
            attention_probs = self.attention_dropout(attention_probs)
        context_layer = torch.bmm(attention_probs, value_layer.transpose(0, 1))
        new_shape = context_layer.size()[:-2] + \\
            (self.hidden_size_per_partition,)
        context_layer = context_layer.view(*new_shape)

        output, bias = self.dense(context_layer)
        if get_key_value:
            output = [output, present]
        return output, bias
'''

INLINE_FUSED = '''
class ParallelAttention(MegatronModule):
''' + INIT + '''
    def forward(self, hidden_states, attention_mask, layer_past=None, get_key_value=False):
        query_layer, key_layer, value_layer = split(self.query_key_value(hidden_states))
        if layer_past is not None:
            key_layer = torch.cat((layer_past[0], key_layer), dim=0)
            value_layer = torch.cat((layer_past[1], value_layer), dim=0)
        if get_key_value:
            present = (key_layer, value_layer)

        # Fused attention where it computes what the code below computes; see fused_attention.py.
        if (layer_past is None and not get_key_value
                and fused_attention_applies(query_layer, self.scale_mask_softmax, self.attention_dropout)):
            # [sq, b, np, hn] -> [sq, b, hp]
            context_layer = fused_attention(query_layer, key_layer, value_layer, attention_mask,
                                            alpha=(1.0/self.norm_factor), softmax=self.scale_mask_softmax)
        else:
            # raw scores [b, np, sq, sk]
            output_size = (query_layer.size(1), query_layer.size(2), query_layer.size(0), key_layer.size(0))
            matmul_result = torch.baddbmm(
                buffer, query_layer.transpose(0, 1),
                key_layer.transpose(0, 1).transpose(1, 2),
                beta=0.0, alpha=(1.0/self.norm_factor))
            attention_probs = self.scale_mask_softmax(matmul_result.view(*output_size), attention_mask)
            with mpu.get_cuda_rng_tracker().fork():
                attention_probs = self.attention_dropout(attention_probs)
            context_layer = torch.bmm(attention_probs, value_layer.transpose(0, 1))
            new_shape = context_layer.size()[:-2] + \\
                (self.hidden_size_per_partition,)
            context_layer = context_layer.view(*new_shape)

        output, bias = self.dense(context_layer)
        if get_key_value:
            output = [output, present]
        return output, bias
'''

CORE = '''
class CoreAttention(MegatronModule):
''' + INIT + '''
    def forward(self, query_layer, key_layer, value_layer, attention_mask):
        matmul_result = torch.baddbmm(
            buffer, query_layer.transpose(0, 1), key_layer.transpose(0, 1).transpose(1, 2),
            beta=0.0, alpha=(1.0/self.norm_factor))
        attention_probs = self.scale_mask_softmax(matmul_result, attention_mask)
        attention_probs = self.attention_dropout(attention_probs)
        context_layer = torch.bmm(attention_probs, value_layer.transpose(0, 1))
        return context_layer
'''

CORE_FUSED = '''
class CoreAttention(MegatronModule):
''' + INIT + '''
    def forward(self, query_layer, key_layer, value_layer, attention_mask):
        # Fused attention where it computes what the code below computes; see fused_attention.py.
        if fused_attention_applies(query_layer, self.scale_mask_softmax, self.attention_dropout):
            # [sq, b, np, hn] -> [sq, b, hp]
            context_layer = fused_attention(query_layer, key_layer, value_layer, attention_mask,
                                            alpha=(1.0/self.norm_factor), softmax=self.scale_mask_softmax)
        else:
            matmul_result = torch.baddbmm(
                buffer, query_layer.transpose(0, 1), key_layer.transpose(0, 1).transpose(1, 2),
                beta=0.0, alpha=(1.0/self.norm_factor))
            attention_probs = self.scale_mask_softmax(matmul_result, attention_mask)
            attention_probs = self.attention_dropout(attention_probs)
            context_layer = torch.bmm(attention_probs, value_layer.transpose(0, 1))
        return context_layer
'''


def site(source: str) -> AttentionSite | None:
    return find_core_attention(cst.parse_module(source.lstrip("\n")))


def rewrite(found: AttentionSite):
    return partial(FusedCoreAttention, cls=found.cls, func=found.func, softmax=found.softmax,
                   dropout=found.dropout, alpha=found.alpha, cache_test=found.cache_test)


def test_detects_the_inline_core_with_its_cache_guard():
    found = site(INLINE)
    assert found == AttentionSite("ParallelAttention", "forward", "scale_mask_softmax", "attention_dropout",
                                  "(1.0/self.norm_factor)", "layer_past is None and not get_key_value")


def test_inline_core_moves_under_else_with_its_continuations(check):
    check(rewrite(site(INLINE)), INLINE, INLINE_FUSED)


def test_core_attention_module(check):
    found = site(CORE)
    assert found.cls == "CoreAttention" and found.cache_test is None
    check(rewrite(found), CORE, CORE_FUSED)


def test_a_fused_tree_is_recognised(check):
    assert site(INLINE_FUSED) == site(INLINE)
    check(rewrite(site(INLINE)), INLINE_FUSED, INLINE_FUSED)


def test_alibi_scores_stay_unfused():
    alibi = INLINE.replace("buffer, query_layer", "alibi, query_layer")
    # still the site of the masked softmax (a window, a soft-cap, a scale go there), not fused
    assert site(alibi) == AttentionSite("ParallelAttention", "forward", "scale_mask_softmax", "",
                                        "(1.0/self.norm_factor)", None, fusable=False)


def test_a_core_whose_locals_are_used_later_stays_unfused():
    # Habana's sub_forward returns (context_layer, output_size): output_size is needed after the core.
    later = CORE.replace("        return context_layer\n", "        return context_layer, attention_probs\n")
    assert not site(later).fusable


def test_a_core_in_a_helper_method_with_a_dropout_built_only_when_needed_is_the_softmax_site():
    helper = (CORE.replace("torch.nn.Dropout(args.attention_dropout)",
                           "torch.nn.Dropout(args.attention_dropout) if args.attention_dropout else None")
                  .replace("    def forward(self, query_layer, key_layer, value_layer, attention_mask):",
                           "    def forward(self, query_layer, key_layer, value_layer, attention_mask):\n"
                           "        return self.inner(query_layer, key_layer, value_layer, attention_mask)\n\n"
                           "    def inner(self, query_layer, key_layer, value_layer, attention_mask):"))
    assert site(helper) == AttentionSite("CoreAttention", "inner", "scale_mask_softmax", "",
                                         "(1.0/self.norm_factor)", None, fusable=False)


def test_no_softmax_module_no_site():
    assert site(INLINE.replace("FusedScaleMaskSoftmax(", "Softmax(")) is None


def test_refuses_when_the_core_is_gone(refuses):
    found = site(INLINE)
    broken = INLINE.replace("torch.baddbmm(", "torch.matmul(")
    error = refuses(rewrite(found), broken)
    assert "ParallelAttention.forward" in str(error) and "core attention" in str(error)
