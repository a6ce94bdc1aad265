"""Where each weight lives in a ported tree, as plain data (`WeightLayout`).

The attribute names of the modules that hold weights (they differ between trees: `attention`
or `self_attention`, ...), the keys of the nested dict the tree's
`state_dict_for_save_checkpoint` writes, the order of the layer specs of the generated
`<Prefix>ModelPipe`, and the facts the spec and the port fix:

- fused QKV: the attention's `query_key_value` output is laid out per key/value head,
  [ng, np/ng + 2, hn] (per head [np, 3, hn] when every head has its own key and value), so a
  row split keeps whole groups on a rank;
- fused gate+up: on every tensor-parallel rank the first half of `dense_h_to_4h`'s output
  is the gate and the second half the up projection (porter's swiglu.py); the full weight
  is therefore [gate_0; up_0; gate_1; up_1; ...] when the ranks' shards are stacked;
- the untied head, vocabulary padding to a multiple of make_vocab_size_divisible_by x TP,
  bias or none.

porter.profile.layout reads it from the tree (by structure, with libcst); verify and convert
use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightLayout:
    # ParallelTransformerLayer
    input_norm: str = "input_layernorm"
    attention: str = "attention"
    post_attention_norm: str = "post_attention_layernorm"
    mlp: str = "mlp"
    # ParallelAttention / ParallelMLP
    qkv: str = "query_key_value"
    # the tree's own grouped-query attention that projects q and (k, v) apart when there are fewer
    # key/value heads than query heads (porter/differences/grouped_query/apart.py): those two
    # ColumnParallelLinear; the key/value one laid out per key/value head [ng, 2, hn]. "": fused
    gqa_query: str = ""
    gqa_key_value: str = ""
    # the tree's own GQA repeats the keys per query head where q and k are first bound
    # (grouped_query/expanded.py): what runs on the keys right after (a key norm) sees np heads
    gqa_keys_repeated: bool = False
    dense: str = "dense"
    fc1: str = "dense_h_to_4h"
    up: str = ""  # a separate up projection (Habana's hand port); "": fc1 is the fused [gate; up]
    fc2: str = "dense_4h_to_h"
    rotary: str = "rotary_emb"
    # ParallelTransformer
    layers: str = "layers"
    final_norm: str = "final_layernorm"
    # language model and its checkpoint keys
    embedding: str = "embedding"
    encoder: str = "encoder"
    word_embeddings: str = "word_embeddings"
    language_model_key: str = "language_model"
    embedding_key: str = "embedding"
    encoder_key: str = "encoder"
    word_embeddings_key: str = "word_embeddings"
    # the untied head: its module in the plain model, the keys down to its weight in the nested
    # checkpoint dict, and its pipe layer's state_dict key. porter's template: LLaMAModel's
    # `output_layer` wraps a linear `output_layer`; trees whose language model holds the head
    # (microsoft HEAD) keep it at language_model.output_layer.
    head_module: str = "output_layer"
    head_keys: tuple[str, ...] = ("output_layer", "output_layer.weight")
    head_pipe_key: str = "output_layer.weight"
    # the tree's own rotary keeps its frequencies as a saved buffer (register_buffer without
    # persistent=False): the layer keys of those buffers, which a converted checkpoint must hold
    # for the tree's strict --load (HF keeps them unsaved)
    rotary_buffers: tuple[str, ...] = ()
    # what the spec and the port fix (each difference's layout(), porter/differences/)
    qkv_order: str = "per_head"  # [np, 3, hn]
    gate_first: bool = True
    activation: str = "swiglu"  # the gated activation on the fused gate+up output (swiglu, geglu)
    tied: bool = False
    qkv_bias: bool = False
    attention_output_bias: bool = False
    mlp_bias: bool = False
    final_norm_present: bool = True
    # projections HF's checkpoint holds fused, where the tree's slot is made of their parts
    # ("qkv": q, k and v in one tensor; "gate_up": gate and up in one)
    hf_fused: tuple[str, ...] = ()
    make_vocab_size_divisible_by: int = 128
    # the generated <Prefix>ModelPipe's layer spec indices (porter/profile/pipe_order.py):
    # porter's template: embedding, transpose, the layers, transpose, final norm, head
    pipe_embedding: int = 0
    pipe_first_layer: int = 2
    pipe_norm_after: int = 1  # the final norm: pipe_first_layer + num_layers + pipe_norm_after
    pipe_head_after: int = 2  # the head: pipe_first_layer + num_layers + pipe_head_after

    @property
    def bias(self) -> bool:
        return self.qkv_bias or self.attention_output_bias or self.mlp_bias

    def padded_vocab(self, vocab_size: int, tensor_parallel: int) -> int:
        """The tree's vocabulary padding: up to a multiple of divisible_by x TP."""
        multiple = self.make_vocab_size_divisible_by * tensor_parallel
        return -(-vocab_size // multiple) * multiple

    def pipe_layer(self, index: int) -> int:
        return self.pipe_first_layer + index

    def pipe_final_norm(self, num_layers: int) -> int:
        return self.pipe_first_layer + num_layers + self.pipe_norm_after

    def pipe_output_layer(self, num_layers: int) -> int:
        return self.pipe_first_layer + num_layers + self.pipe_head_after

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> WeightLayout:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
