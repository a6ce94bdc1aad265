"""Before/after tests of the grouped-query attention rewrites, and a numeric check that the
grouped split with one group per head is the tree's per-head split."""

from functools import partial

import torch

from porter.differences.grouped_query import rewrites as G
from porter.render import environment

ATTENTION = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number):
        args = get_args()
        self.num_attention_heads = args.num_attention_heads
        projection_size = args.kv_channels * args.num_attention_heads
        world_size = mpu.get_tensor_model_parallel_world_size()
        self.hidden_size_per_attention_head = mpu.divide(projection_size, args.num_attention_heads)
        self.num_attention_heads_per_partition = mpu.divide(args.num_attention_heads, world_size)
        self.query_key_value = mpu.ColumnParallelLinear(
            args.hidden_size,
            3 * projection_size,
            gather_output=False,
            init_method=init_method)

    def forward(self, hidden_states, attention_mask):
        # [sq, b, h] -> [sq, b, np * 3 * hn]
        mixed_x_layer, _ = self.query_key_value(hidden_states)

        # -> [sq, b, np, 3 * hn]
        new_tensor_shape = mixed_x_layer.size()[:-1] + \\
            (self.num_attention_heads_per_partition,
             3 * self.hidden_size_per_attention_head)
        mixed_x_layer = mixed_x_layer.view(*new_tensor_shape)

        # -> 3 x [sq, b, np, hn]
        (query_layer,
         key_layer,
         value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)

        # scores
        matmul_result = torch.baddbmm(
            matmul_result, query_layer, key_layer, beta=0.0, alpha=(1.0 / self.norm_factor))
        context_layer = torch.bmm(matmul_result, value_layer)
        return context_layer
'''


def test_the_projection_is_sized_for_the_groups(check):
    check(partial(G.GroupedQKVProjection, cls="ParallelAttention", groups="args.num_key_value_heads"),
          ATTENTION, ATTENTION.replace(
              '''        self.num_attention_heads_per_partition = mpu.divide(args.num_attention_heads, world_size)
''', '''        self.num_attention_heads_per_partition = mpu.divide(args.num_attention_heads, world_size)
        # Grouped-query attention: ng key/value heads, each shared by np/ng query heads.
        self.num_query_groups = args.num_key_value_heads or args.num_attention_heads
        self.num_query_groups_per_partition = mpu.divide(self.num_query_groups, world_size)
''').replace("            3 * projection_size,",
             "            projection_size + 2 * self.num_query_groups * self.hidden_size_per_attention_head,"))


def test_the_split_is_by_groups_and_the_unfused_math_gets_repeated_keys(check):
    check(partial(G.GroupedQKVSplit, cls="ParallelAttention", func="forward"), ATTENTION, ATTENTION.replace(
        '''
        # -> [sq, b, np, 3 * hn]
        new_tensor_shape = mixed_x_layer.size()[:-1] + \\
            (self.num_attention_heads_per_partition,
             3 * self.hidden_size_per_attention_head)
        mixed_x_layer = mixed_x_layer.view(*new_tensor_shape)

        # -> 3 x [sq, b, np, hn]
        (query_layer,
         key_layer,
         value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)
''', '''
        # [sq, b, ng * (np/ng + 2) * hn] -> q [sq, b, np, hn], k and v [sq, b, ng, hn]
        query_layer, key_layer, value_layer = split_query_key_value(
            mixed_x_layer, self.num_query_groups_per_partition, self.hidden_size_per_attention_head)
''').replace('''
        # scores
''', '''
        # the attention math below takes one key/value head per query head
        key_layer, value_layer = repeat_key_value(key_layer, value_layer, self.num_attention_heads_per_partition)
        # scores
'''))


# the attention math in a module of its own: this function hands q, k, v to it (or to a kernel);
# with a key/value cache allocated per query head, filled in place
HANDED_ON = '''
class ParallelAttention(MegatronModule):
    def __init__(self, config, layer_number):
        args = get_args()
        world_size = mpu.get_tensor_model_parallel_world_size()
        self.hidden_size_per_attention_head = core.utils.divide(projection_size, config.num_attention_heads)
        self.num_attention_heads_per_partition = core.utils.divide(
            config.num_attention_heads, world_size)
        self.query_key_value = tensor_parallel.ColumnParallelLinear(config.hidden_size, 3 * projection_size)
        self.core_attention = CoreAttention(layer_number, config)

    def forward(self, hidden_states, attention_mask, cache=None):
        if self.attention_type == AttnType.self_attn:
            mixed_x_layer, _ = self.query_key_value(hidden_states)
            new_tensor_shape = mixed_x_layer.size()[:-1] + \\
                (self.num_attention_heads_per_partition, 3 * self.hidden_size_per_attention_head)
            mixed_x_layer = mixed_x_layer.view(*new_tensor_shape)
            (query_layer, key_layer, value_layer) = split_tensor_along_last_dim(mixed_x_layer, 3)
        else:
            query_layer, key_layer, value_layer = self.cross(hidden_states)

        if rotary_pos_emb is not None:
            query_layer = apply_rotary_pos_emb(query_layer, rotary_pos_emb)
            key_layer = apply_rotary_pos_emb(key_layer, rotary_pos_emb)
CACHE
        # core attention
        if self.use_flash_attn:
            context_layer = self.flash(query_layer, key_layer, value_layer)
        else:
            context_layer = self.core_attention(query_layer, key_layer, value_layer, attention_mask)
        return self.dense(context_layer)
'''
CACHE = '''
        if cache is not None:
            cache.keys[:key_layer.size(0)] = key_layer
            cache.values[:value_layer.size(0)] = value_layer
            key_layer, value_layer = cache.keys, cache.values
'''
GROUPED_SPLIT = '''            mixed_x_layer, _ = self.query_key_value(hidden_states)
            # [sq, b, ng * (np/ng + 2) * hn] -> q [sq, b, np, hn], k and v [sq, b, ng, hn]
            query_layer, key_layer, value_layer = split_query_key_value(
                mixed_x_layer, self.num_query_groups_per_partition, self.hidden_size_per_attention_head)
        else:
'''
TREE_SPLIT = '''            mixed_x_layer, _ = self.query_key_value(hidden_states)
            new_tensor_shape = mixed_x_layer.size()[:-1] + \\
                (self.num_attention_heads_per_partition, 3 * self.hidden_size_per_attention_head)
            mixed_x_layer = mixed_x_layer.view(*new_tensor_shape)
            (query_layer, key_layer, value_layer) = split_tensor_along_last_dim(mixed_x_layer, 3)
        else:
'''


def test_the_groups_are_divided_over_the_ranks_as_the_tree_divides_the_heads(check):
    source = HANDED_ON.replace("CACHE\n", "")
    check(partial(G.GroupedQKVProjection, cls="ParallelAttention", groups="args.num_key_value_heads"),
          source, source.replace('''            config.num_attention_heads, world_size)
''', '''            config.num_attention_heads, world_size)
        # Grouped-query attention: ng key/value heads, each shared by np/ng query heads.
        self.num_query_groups = args.num_key_value_heads or config.num_attention_heads
        self.num_query_groups_per_partition = core.utils.divide(self.num_query_groups, world_size)
''').replace("config.hidden_size, 3 * projection_size",
             "config.hidden_size, projection_size + 2 * self.num_query_groups * self.hidden_size_per_attention_head"))


def test_keys_are_repeated_where_they_are_handed_to_the_attention_module(check):
    source = HANDED_ON.replace("CACHE\n", "")
    check(partial(G.GroupedQKVSplit, cls="ParallelAttention", func="forward"), source,
          source.replace(TREE_SPLIT, GROUPED_SPLIT).replace('''
        # core attention
''', '''
        # the attention math below takes one key/value head per query head
        key_layer, value_layer = repeat_key_value(key_layer, value_layer, self.num_attention_heads_per_partition)
        # core attention
'''))


def test_keys_are_repeated_before_a_cache_sized_per_query_head(check):
    source = HANDED_ON.replace("CACHE\n", CACHE)
    check(partial(G.GroupedQKVSplit, cls="ParallelAttention", func="forward"), source,
          source.replace(TREE_SPLIT, GROUPED_SPLIT).replace('''
        if cache is not None:
''', '''
        # the key/value cache below and the attention math take one key/value head per query head
        key_layer, value_layer = repeat_key_value(key_layer, value_layer, self.num_attention_heads_per_partition)
        if cache is not None:
'''))


def test_a_tree_without_a_core_attention_is_refused(refuses):
    source = ATTENTION.replace("torch.baddbmm(", "torch.matmul(")
    error = refuses(partial(G.GroupedQKVSplit, cls="ParallelAttention", func="forward"), source)
    assert "baddbmm" in str(error)


def _helpers():
    namespace = {}
    exec(environment().get_template("grouped_attention.py.j2").render(), namespace)  # noqa: S102
    return namespace["split_query_key_value"], namespace["repeat_key_value"]


def test_one_group_per_head_is_the_trees_per_head_split():
    split, repeat = _helpers()
    heads, hn = 4, 8
    mixed = torch.randn(5, 2, heads * 3 * hn)
    tree = mixed.view(5, 2, heads, 3 * hn).split(hn, dim=-1)
    for ours, theirs in zip(split(mixed, heads, hn), tree, strict=True):
        assert torch.equal(ours, theirs)
    q, k, v = split(mixed, heads, hn)
    assert repeat(k, v, heads) == (k, v)


def test_groups_hold_their_queries_then_key_then_value():
    split, repeat = _helpers()
    groups, per_group, hn = 2, 3, 4  # 6 query heads, 2 key/value heads
    mixed = torch.arange(2 * (per_group + 2) * hn, dtype=torch.float32).view(1, 1, -1)
    q, k, v = split(mixed, groups, hn)
    assert q.shape == (1, 1, 6, 4) and k.shape == v.shape == (1, 1, 2, 4)
    assert k[0, 0, 1, 0] == (per_group + 2) * hn + per_group * hn  # group 1's key follows its 3 queries
    keys, _ = repeat(k, v, 6)
    assert torch.equal(keys[0, 0, :3], k[0, 0, :1].expand(3, 4)) and torch.equal(keys[0, 0, 3:], k[0, 0, 1:].expand(3, 4))
