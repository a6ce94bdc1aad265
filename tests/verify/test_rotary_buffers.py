"""A tree's own rotary that saves its frequencies (register_buffer without persistent=False,
Habana 7086aadb's CoreAttention.rotary_emb): converted checkpoints hold them, as the tree's
strict --load wants, and the way back to HF drops them."""

from __future__ import annotations

import textwrap

import libcst as cst
import torch

from porter.catalog import load_spec
from porter.convert.sharding import shard
from porter.convert.tensors import hf_to_megatron, megatron_to_hf
from porter.differences.rotary.weights import rotary_inv_freq
from porter.layout import WeightLayout
from porter.profile.layout import rotary_buffers
from porter.source import REQUIRED_FILES, SourceTree

TRANSFORMER = '''
from .positional_embeddings import RotaryEmbedding


class CoreAttention(MegatronModule):
    def __init__(self, layer_number):
        super().__init__()
        if args.position_embedding_type == PositionEmbeddingType.rotary:
            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head)


class ParallelAttention(MegatronModule):
    def __init__(self, init_method):
        super().__init__()
        self.core_attention = CoreAttention(self.layer_number)


class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method):
        super().__init__()
        self.attention = ParallelAttention(init_method)
'''


def rotary_file(persistent: str) -> str:
    return textwrap.dedent(f'''
        class RotaryEmbedding(torch.nn.Module):
            def __init__(self, dim, base=10000):
                super().__init__()
                inv_freq = 1. / (base ** (torch.arange(0, dim, 2).float() / dim))
                self.register_buffer('inv_freq', inv_freq{persistent})
    ''')


def buffers(tmp_path, persistent: str) -> tuple[str, ...]:
    for rel in REQUIRED_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "megatron/model/transformer.py").write_text(TRANSFORMER)
    (tmp_path / "megatron/model/positional_embeddings.py").write_text(rotary_file(persistent))
    tree = SourceTree.open(tmp_path)
    module = cst.parse_module(TRANSFORMER)
    classes = {s.name.value: s for s in module.body if isinstance(s, cst.ClassDef)}
    return rotary_buffers(tree, module, classes["ParallelTransformerLayer"], classes["ParallelAttention"], "attention")


def test_saved_frequencies_are_found_where_the_layer_holds_them(tmp_path):
    assert buffers(tmp_path, "") == ("attention.core_attention.rotary_emb.inv_freq",)


def test_unsaved_frequencies_are_not_a_checkpoint_tensor(tmp_path):
    assert buffers(tmp_path, ", persistent=False") == ()


def test_the_checkpoint_holds_the_frequencies_and_hf_never_sees_them():
    torch.manual_seed(0)
    h, heads, ffn, vocab = 16, 2, 32, 40
    config = {"hidden_size": h, "num_attention_heads": heads, "num_hidden_layers": 1, "intermediate_size": ffn,
              "vocab_size": vocab, "rope_theta": 500000.0, "tie_word_embeddings": False}
    pre = "model.layers.0."
    state = {"model.embed_tokens.weight": torch.randn(vocab, h), "lm_head.weight": torch.randn(vocab, h),
             "model.norm.weight": torch.randn(h), pre + "input_layernorm.weight": torch.randn(h),
             pre + "post_attention_layernorm.weight": torch.randn(h),
             **{f"{pre}self_attn.{x}_proj.weight": torch.randn(h, h) for x in "qkvo"},
             pre + "mlp.gate_proj.weight": torch.randn(ffn, h), pre + "mlp.up_proj.weight": torch.randn(ffn, h),
             pre + "mlp.down_proj.weight": torch.randn(h, ffn)}
    key = "attention.core_attention.rotary_emb.inv_freq"
    layout = WeightLayout(rotary_buffers=(key,))
    weights = hf_to_megatron(state, config, layout, load_spec("llama").wanted())
    expected = 1.0 / (500000.0 ** (torch.arange(0, 8, 2).float() / 8))
    assert torch.equal(weights.layers[0][key], expected) and torch.equal(rotary_inv_freq(8, 500000.0), expected)
    assert torch.equal(shard(weights, 2, 1).layers[0][key], expected)  # whole on every rank
    back = megatron_to_hf(weights)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_a_saved_local_rotary_holds_the_local_base_on_the_local_layers_only():
    from porter.differences.local_rotary import LocalRotary
    from porter.differences.rotary import Rotary
    from porter.weights import LayerWeights, ModelShape

    main, local = "self_attention.rotary_emb.inv_freq", "self_attention.local_rotary_pos_emb.inv_freq"
    config = {"layer_types": ["sliding_attention", "full_attention"],
              "rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}}
    made = []
    for index in range(2):
        layer = LayerWeights(WeightLayout(attention="self_attention", rotary_buffers=(main, local)), ModelShape(2, 16, 2, 32, 40), config, index)
        Rotary().weights(layer)
        LocalRotary().weights(layer)
        made.append({w.key: w.made() for w in layer.slots["rotary_buffers"]})
    assert set(made[0]) == {main, local} and set(made[1]) == {main}  # layer 1 is a global one: no local rotary
    assert torch.equal(made[0][local], rotary_inv_freq(8, 1e4))
    assert torch.equal(made[0][main], rotary_inv_freq(8, 1e6)) and torch.equal(made[1][main], made[0][main])


def test_a_saved_rotary_built_again_on_local_layers_holds_their_base():
    """EleutherAI's class built by each attention (Habana 7086aadb, BigScience): a local layer builds
    it again with the local base under the same name, so its saved frequencies are the local ones."""
    from porter.differences.local_rotary import LocalRotary
    from porter.differences.rotary import Rotary
    from porter.weights import LayerWeights, ModelShape

    main = "self_attention.core_attention.rotary_emb.inv_freq"
    config = {"layer_types": ["sliding_attention", "full_attention"],
              "rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}}
    made = []
    for index in range(2):
        layer = LayerWeights(WeightLayout(attention="self_attention", rotary_buffers=(main,)), ModelShape(2, 16, 2, 32, 40),
                             config, index)
        Rotary().weights(layer)
        LocalRotary().weights(layer)
        made.append({w.key: w.made() for w in layer.slots["rotary_buffers"]})
    assert set(made[0]) == set(made[1]) == {main}
    assert torch.equal(made[0][main], rotary_inv_freq(8, 1e4)) and torch.equal(made[1][main], rotary_inv_freq(8, 1e6))
