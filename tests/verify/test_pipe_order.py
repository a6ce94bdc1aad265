"""The pipe model's layer-spec order is read from the class that builds it: porter's template,
or a tree's own GPTModelPipe when the generated class only subclasses it (microsoft's order:
a cast, the embedding, the layers, the final norm, an LMHeadPipe holding `lm_head`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from porter.convert.layout import WeightLayout, pipe_order
from porter.source import SourceTree
from porter.spec import load_spec

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


def tree_with(root: Path, files: dict[str, str]) -> SourceTree:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    from porter.source import REQUIRED_FILES

    for rel in REQUIRED_FILES:
        if not (root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("")
    return SourceTree.open(root)


def test_a_tree_s_own_gpt_model_pipe_gives_the_order_and_the_head_key(tmp_path):
    tree = tree_with(tmp_path, {"megatron/model/llama_model.py": FLAGS_MODEL,
                                "megatron/model/gpt_model.py": GPT_MODEL,
                                "megatron/model/transformer.py": TRANSFORMER})
    order = WeightLayout(**pipe_order(tree, load_spec("llama")))
    assert (order.pipe_embedding, order.pipe_layer(0), order.pipe_final_norm(2), order.pipe_output_layer(2)) == (1, 2, 4, 5)
    assert order.head_pipe_key == "lm_head.weight"


def test_porter_s_own_pipe_class_keeps_the_template_order(ported_tree):
    order = WeightLayout(**pipe_order(SourceTree.open(ported_tree), load_spec("llama")))
    assert order == WeightLayout()  # embedding 0, layers from 2, norm and head after a transpose
    assert (order.pipe_final_norm(2), order.pipe_output_layer(2), order.head_pipe_key) == (5, 6, "output_layer.weight")
