"""Before/after test of the repair of a tree's own grouped-query attention whose single key/value head reaches
the core attention expanded (porter/differences/grouped_query/repair.py), and that torch refuses the view it
replaces on such a tensor while the reshape is the same view on a contiguous one."""

from functools import partial

import torch

from porter.differences.grouped_query.repair import ReshapedKeysAndValues

CORE = '''
class CoreAttention(MegatronModule):
    def forward(self, query_layer, key_layer, value_layer, attention_mask):
        output_size = (query_layer.size(1), query_layer.size(2), query_layer.size(0), key_layer.size(0))
        key_layer = key_layer.view(output_size[3], output_size[0] * output_size[1], -1)
        scores = torch.baddbmm(buffer, query_layer, key_layer, beta=0.0, alpha=(1.0 / self.norm_factor))
        probs = self.scale_mask_softmax(scores, attention_mask)
        value_layer = value_layer.view(value_layer.size(0), output_size[0] * output_size[1], -1)
        return torch.bmm(probs, value_layer)
'''

NOTE = "        # reshape: a single key/value head may come repeated by expand (no view of it exists)\n"


def test_the_core_attention_reshapes_its_keys_and_values(check):
    check(partial(ReshapedKeysAndValues, cls="CoreAttention", func="forward"), CORE,
          CORE.replace("        key_layer = key_layer.view(", NOTE + "        key_layer = key_layer.reshape(")
              .replace("        value_layer = value_layer.view(", NOTE + "        value_layer = value_layer.reshape("))


def test_an_expanded_single_head_has_no_view_and_the_reshape_is_a_view_where_one_exists():
    one_head = torch.randn(5, 2, 1, 8)
    expanded = one_head.expand(5, 2, 4, 8)  # a tree's repeat of one key/value head for 4 query heads
    try:
        expanded.view(5, 8, -1)
        refused = False
    except RuntimeError:
        refused = True
    assert refused
    assert torch.equal(expanded.reshape(5, 8, -1), expanded.contiguous().view(5, 8, -1))
    plain = torch.randn(5, 2, 4, 8)
    assert plain.reshape(5, 8, -1).data_ptr() == plain.data_ptr()  # no copy where the view exists
