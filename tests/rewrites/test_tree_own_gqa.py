"""A tree's own grouped-query attention (porter/differences/grouped_query/apart.py, expanded.py):
the detector reads q and (k, v) projected apart from the class's own flag and branch (text written
here in the construct's shape), refuses one it cannot read at apply time, and the weights and probes
it puts in the layer agree with each other and with HF's k and v; a zero-stride key/value repeat
gets the unfused attention's views repaired."""

from __future__ import annotations

import libcst as cst
import pytest
import torch

from porter.differences.grouped_query.apart import split_projections
from porter.differences.grouped_query.weights import apart_probes, apart_weights, fuse_kv, split_kv
from porter.layout import WeightLayout
from porter.probe import LayerProbes
from porter.weights import LayerWeights, ModelShape

ATTENTION = '''
class ParallelAttention(MegatronModule):
    def __init__(self, config, layer_number, attention_type=AttnType.self_attn):
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.grouped = self.heads != self.kv_heads
        width = config.kv_channels * self.heads
        kv_width = config.kv_channels * self.kv_heads
        self.kv_heads_here = core.utils.divide(self.kv_heads, world_size)
        self.hn = config.kv_channels
        if attention_type == AttnType.self_attn and not self.grouped:
            self.query_key_value = tensor_parallel.ColumnParallelLinear(config.hidden_size, 3 * width, config=config)
        elif self.grouped and attention_type == AttnType.self_attn:
            self.q_part = tensor_parallel.ColumnParallelLinear(config.hidden_size, width, config=config)
            self.kv_part = tensor_parallel.ColumnParallelLinear(config.hidden_size, KV_WIDTH, config=config)
        else:
            self.q_part = tensor_parallel.ColumnParallelLinear(config.hidden_size, width, config=config)
            self.kv_part = tensor_parallel.ColumnParallelLinear(config.hidden_size, 2 * width, config=config)
        self.dense = tensor_parallel.RowParallelLinear(width, config.hidden_size, config=config)

    def forward(self, hidden_states, attention_mask, encoder_output=None):
        if self.grouped:
            query_layer, _ = self.q_part(hidden_states)
            kv, _ = self.kv_part(hidden_states)
            kv = kv.view(*kv.size()[:-1], self.kv_heads_here, 2 * self.hn)
            key_layer, value_layer = KV_SPLIT
            key_layer = self.widen(key_layer, self.heads // self.kv_heads)
        return self.dense(query_layer)
'''
GROUPED = {"KV_WIDTH": "2 * kv_width", "KV_SPLIT": "tensor_parallel.split_tensor_along_last_dim(kv, 2)"}


def _attention(**changes) -> cst.Module:
    text = ATTENTION
    for key, value in {**GROUPED, **changes}.items():
        text = text.replace(key, value)
    return cst.parse_module(text)


def test_the_detector_reads_the_two_projections_of_the_grouped_branch():
    apart = split_projections(_attention())
    assert (apart.query, apart.key_value, apart.found) == ("q_part", "kv_part", "")
    from porter.differences.grouped_query.expanded import keys_repeated
    assert keys_repeated(_attention())
    assert not keys_repeated(_attention(**{"            key_layer = self.widen(": "            other = self.widen("}))


def test_a_tree_without_the_flag_or_with_the_pair_only_for_cross_attention_has_none():
    assert split_projections(_attention().with_changes(body=[])) is None
    no_flag = ATTENTION.replace("self.grouped = self.heads != self.kv_heads", "self.grouped = False")
    for key, value in GROUPED.items():
        no_flag = no_flag.replace(key, value)
    assert split_projections(cst.parse_module(no_flag)) is None


@pytest.mark.parametrize("changes, found", [
    ({"KV_WIDTH": "kv_width + kv_width"}, "none of them 2 * (key/value heads) wide"),
    ({"KV_SPLIT": "torch.chunk(kv, 2, dim=0)"}, "cut in key | value halves"),
])
def test_a_pair_porter_cannot_read_is_found_for_the_refusal(changes, found):
    apart = split_projections(_attention(**changes))
    assert apart.query == apart.key_value == "" and found in apart.found


def test_apply_refuses_an_unreadable_pair_naming_file_construct_and_fix():
    from porter.differences.grouped_query import _unreadable
    apart = split_projections(_attention(KV_WIDTH="kv_width + kv_width"))
    error = _unreadable(apart)
    assert error.file == "megatron/model/transformer.py" and "2 * ng * hn" in error.construct and error.fix
    assert apart.found in error.found


SHAPE = ModelShape(num_layers=1, hidden_size=8, num_attention_heads=4, ffn_hidden_size=16, vocab_size=32, kv_heads=2,
                   head_dim=3)
LAYOUT = WeightLayout(attention="self_attention", gqa_query="q_part", gqa_key_value="kv_part")


def test_the_key_value_weight_is_hf_k_and_v_per_head_and_splits_back_bit_exact():
    k, v = torch.randn(2 * 3, 8), torch.randn(2 * 3, 8)
    kv = torch.cat(fuse_kv(k, v, 2))
    assert torch.equal(kv[:3], k[:3]) and torch.equal(kv[3:6], v[:3]) and torch.equal(kv[6:9], k[3:])
    back = split_kv(kv, 2)
    assert torch.equal(back[0], k) and torch.equal(back[1], v)


def test_the_layer_weights_and_probes_name_the_two_projections_and_agree():
    layer = LayerWeights(LAYOUT, SHAPE, {})
    apart_weights(layer)
    query, kv = layer.slots["qkv"]
    assert (query.key, query.hf, query.role) == ("self_attention.q_part.weight", ("self_attn.q_proj.weight",), "rows")
    assert kv.key == "self_attention.kv_part.weight" and kv.role == "rows"
    probes = LayerProbes(LAYOUT, 0, SHAPE.num_attention_heads, {"num_key_value_heads": 2})
    apart_probes(probes)
    assert [p.name for p in probes.slots["qkv"]] == ["language_model.encoder.layers.0.self_attention.q_part",
                                                      "language_model.encoder.layers.0.self_attention.kv_part"]
    # the tree's kv_part output (x @ W^T, W made from HF's k and v) is what the probe computes from HF's
    x, k, v = torch.randn(1, 5, 8), torch.randn(6, 8), torch.randn(6, 8)
    tree = x @ torch.cat(kv.to_tree((k, v))).T
    hf = probes.slots["qkv"][1].hf({"model.layers.0.self_attn.k_proj": x @ k.T, "model.layers.0.self_attn.v_proj": x @ v.T})
    assert torch.allclose(tree, hf, rtol=0, atol=1e-5)  # the same sums, in another matmul's order
    assert not torch.allclose(tree, hf.reshape(1, 5, 2, 2, 3).flip(3).reshape(1, 5, -1), rtol=0, atol=1e-2)


def test_as_many_key_value_heads_as_query_heads_keep_the_fused_projection():
    shape = ModelShape(num_layers=1, hidden_size=8, num_attention_heads=4, ffn_hidden_size=16, vocab_size=32)
    layer = LayerWeights(LAYOUT, shape, {})
    apart_weights(layer)
    assert [w.key for w in layer.slots["qkv"]] == ["self_attention.query_key_value.weight"]


REPEAT = '''
class ParallelAttention(MegatronModule):
    def widen(self, x, times):
        s, b, g, hn = x.shape
        if times == 1:
            return x
        return x[:, :, :, None, :].expand(s, b, g, times, hn).reshape(s, b, g * times, hn)


class CoreAttention(MegatronModule):
    def forward(self, q, k, v, mask):
        shape = (q.size(1), q.size(2), q.size(0), k.size(0))
        q = q.view(shape[2], shape[0] * shape[1], -1)
        k = k.view(shape[3], shape[0] * shape[1], -1)
        if self.fused:
            return fused(q, k, v)
        else:
            v = v.view(v.size(0), shape[0] * shape[1], -1)
        return torch.bmm(q, v)
'''


def test_the_zero_stride_repeat_and_the_views_it_breaks_are_found():
    from porter.differences.grouped_query.expanded import expanded_repeat
    found = expanded_repeat(cst.parse_module(REPEAT))
    assert (found.method, found.viewed) == ("widen", ("k", "v"))
    assert expanded_repeat(cst.parse_module(REPEAT.replace(".reshape(", ".contiguous().reshape("))) is None


def test_the_repair_reshapes_the_key_and_value_views_only_and_is_idempotent():
    from porter.differences.grouped_query.rewrites import ReshapeRepeatedKeyValue
    module = cst.parse_module(REPEAT)
    once = ReshapeRepeatedKeyValue(cls="CoreAttention", func="forward", names=("k", "v")).apply(module, "t.py")
    text = once.code
    assert "k = k.reshape(shape[3]" in text and "v = v.reshape(v.size(0)" in text and "q = q.view(" in text
    twice = ReshapeRepeatedKeyValue(cls="CoreAttention", func="forward", names=("k", "v")).apply(once, "t.py")
    assert twice.code == text
    # why: the repeat's zero-stride heads cannot be viewed as [sk, b * np, hn]; reshape is the same numbers
    x = torch.randn(5, 2, 1, 3)
    widened = x[:, :, :, None, :].expand(5, 2, 1, 4, 3).reshape(5, 2, 4, 3)
    with pytest.raises(RuntimeError):
        widened.view(5, 8, -1)
    assert torch.equal(widened.reshape(5, 8, -1), widened.contiguous().view(5, 8, -1))


def test_the_key_norm_probe_takes_one_key_per_group_where_the_tree_repeats_them_before_it():
    from dataclasses import replace

    from porter.differences.qk_norm.probes import add_qk_norm_probes
    probes = LayerProbes(replace(LAYOUT, gqa_keys_repeated=True), 0, 4, {"num_key_value_heads": 2})
    add_qk_norm_probes(probes)
    query, key = probes.slots["qk_norm"]
    heads = torch.randn(5, 2, 2, 3)  # [s, b, ng, hn]
    repeated = heads.repeat_interleave(2, dim=2)  # [s, b, np, hn] as the tree's repeat makes it
    assert torch.equal(key.reshape(repeated, 2), heads.flatten(2))
    assert query.reshape(repeated, 2).shape == (5, 2, 12)
    plain = LayerProbes(LAYOUT, 0, 4, {"num_key_value_heads": 2})
    add_qk_norm_probes(plain)
    assert plain.slots["qk_norm"][1].reshape(heads, 2).shape == (5, 2, 6)


def test_the_local_rotary_frequencies_are_saved_in_local_layers_only_with_the_local_base():
    from porter.differences.local_rotary.weights import local_frequencies
    from porter.differences.rotary.weights import rope_theta, saved_frequencies
    key = "self_attention.local_rotary_pos_emb.inv_freq"
    layout = WeightLayout(attention="self_attention", rotary_buffers=(key,))
    config = {"layer_types": ["sliding_attention", "full_attention"],
              "rope_parameters": {"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                                  "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}}
    assert rope_theta(config) == 1e6
    shape = ModelShape(num_layers=2, hidden_size=8, num_attention_heads=2, ffn_hidden_size=16, vocab_size=32)
    made = []
    for index in (0, 1):
        layer = LayerWeights(layout, shape, config, index)
        saved_frequencies(layer)
        local_frequencies(layer)
        made.append([(w.key, w.made()) for w in layer.slots["rotary_buffers"]])
    ((name, local),), global_ = made
    assert name == key and global_ == []
    assert torch.allclose(local, 1.0 / (1e4 ** (torch.arange(0, 4, 2).float() / 4)))


def test_the_layout_probes_the_rotary_that_rotates_q_and_k_not_one_that_makes_angles():
    from porter.profile.layout import _rotary
    text = '''
class ParallelAttention(MegatronModule):
    def __init__(self, config):
        self.angles_here = RotaryEmbedding(config.kv_channels, theta=10000)
        self.turn = RotaryEmbedding(config.kv_channels)

    def forward(self, hidden_states, rotary_pos_emb=None):
        rotary_pos_emb = self.angles_here(rotary_pos_emb.shape[0])
        query_layer, key_layer = self.turn(query_layer, key_layer, offset=0)
'''
    attention = cst.parse_module(text).body[0]
    assert _rotary(attention) == "turn"
    handed_only = cst.parse_module(text.replace("self.turn(query_layer, key_layer, offset=0)", "rotate(query_layer)"))
    assert _rotary(handed_only.body[0]) == "rotary_emb"  # none here: the probe finds no such module
