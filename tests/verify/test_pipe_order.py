"""The pipe model's layer-spec order is read from the class that builds it: porter's template,
or a tree's own GPTModelPipe when the generated class only subclasses it (microsoft's order:
a cast, the embedding, the layers, the final norm, an LMHeadPipe holding `lm_head`)."""

from __future__ import annotations

import textwrap

import libcst as cst

from porter.layout import WeightLayout
from porter.profile.pipe_order import head_key, read_order

FLAGS_MODEL = '''
from megatron.model.gpt_model import GPTModel, GPTModelPipe


class LLaMAModelPipe(GPTModelPipe):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
'''

GPT_MODEL = '''
class GPTModelPipe(PipelineModule, MegatronModule):
    def __init__(self, config, num_tokentypes=0, parallel_output=True):
        args = get_args()
        self.specs = []

        def _to_float16(inputs):
            return inputs

        self.specs.append(_to_float16)
        if args.untie_embeddings_and_output_weights:
            self.specs.append(LayerSpec(EmbeddingPipe, args.hidden_size, args.padded_vocab_size))
        else:
            self.specs.append(TiedLayerSpec('embed', EmbeddingPipe, args.hidden_size, args.padded_vocab_size))
        for layer_idx in range(args.num_layers):
            self.specs.append(LayerSpec(ParallelTransformerLayerPipe, config, layer_number=layer_idx))
        if args.normalization == 'layernorm':
            self.specs.append(LayerSpec(LayerNorm, args.hidden_size, eps=args.layernorm_epsilon))
        else:
            self.specs.append(LayerSpec(MixedFusedRMSNorm, args.hidden_size, args.layernorm_epsilon))
        if args.untie_embeddings_and_output_weights:
            self.specs.append(LayerSpec(LMHeadPipe, args.hidden_size, args.padded_vocab_size, config))
        else:
            self.specs.append(TiedLayerSpec('embed', EmbeddingPipe, args.hidden_size, args.padded_vocab_size))
        super().__init__(layers=self.specs, loss_fn=CrossEntropy)
'''

TRANSFORMER = '''
class LMHeadPipe(MegatronModule):
    def __init__(self, hidden_size, vocab_size, config):
        super().__init__()
        self.lm_head = tensor_parallel.ColumnParallelLinear(input_size=hidden_size, output_size=vocab_size,
                                                            bias=False, config=config)
'''


def init_of(source: str, cls: str) -> cst.FunctionDef:
    module = cst.parse_module(textwrap.dedent(source).lstrip())
    found = next(s for s in module.body if isinstance(s, cst.ClassDef) and s.name.value == cls)
    return next(s for s in found.body.body if isinstance(s, cst.FunctionDef) and s.name.value == "__init__")


def test_a_tree_s_own_gpt_model_pipe_gives_the_order_and_the_head_key():
    order = read_order(init_of(GPT_MODEL, "GPTModelPipe"))
    layout = WeightLayout(pipe_embedding=order.embedding, pipe_first_layer=order.first_layer,
                          pipe_norm_after=order.norm_after, pipe_head_after=order.head_after)
    assert (layout.pipe_embedding, layout.pipe_layer(0), layout.pipe_final_norm(2), layout.pipe_output_layer(2)) \
        == (1, 2, 4, 5)
    assert head_key(cst.parse_module(textwrap.dedent(TRANSFORMER).lstrip()), order.head_class) == "lm_head.weight"


def test_a_subclass_that_only_checks_switches_has_no_order_of_its_own():
    assert read_order(init_of(FLAGS_MODEL, "LLaMAModelPipe")) is None  # the base class's order is read


def test_porter_s_own_pipe_class_keeps_the_template_order(ported_tree):
    from porter.convert.run import Port

    layout = Port("llama", ported_tree).layout
    assert (layout.pipe_embedding, layout.pipe_first_layer, layout.pipe_norm_after, layout.pipe_head_after) == (0, 2, 1, 2)
    assert (layout.pipe_final_norm(2), layout.pipe_output_layer(2), layout.head_pipe_key) == (5, 6, "output_layer.weight")
