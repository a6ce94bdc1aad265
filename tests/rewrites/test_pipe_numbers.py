"""The pipe's layers numbered from 1 where the tree's own GPTModelPipe carries a window pattern
(microsoft HEAD hands its layer specs the loop index from 0; the plain transformer counts from 1)."""

import pytest

from porter.differences.sliding_window.pipe_numbers import PipeLayersNumberedFromOne
from porter.errors import AnchorError
from tests.rewrites.conftest import run

BEFORE = """
class GPTModelPipe(PipelineModule):
    def __init__(self, config):
        args = get_args()
        for layer_idx in range(args.num_layers):
            self.specs.append(
                LayerSpec(ParallelTransformerLayerPipe,
                          config,
                          layer_number=layer_idx,
                          num_experts=experts_per_layer[layer_idx]))
"""

AFTER = """
class GPTModelPipe(PipelineModule):
    def __init__(self, config):
        args = get_args()
        # layers numbered from 1, as the plain transformer numbers them (the window pattern counts them so)
        for layer_idx in range(args.num_layers):
            self.specs.append(
                LayerSpec(ParallelTransformerLayerPipe,
                          config,
                          layer_number=layer_idx + 1,
                          num_experts=experts_per_layer[layer_idx]))
"""


def test_the_pipe_numbers_its_layers_from_one(check):
    check(lambda: PipeLayersNumberedFromOne(cls="GPTModelPipe"), BEFORE, AFTER)


def test_a_pipe_without_numbered_layers_is_refused_by_name():
    with pytest.raises(AnchorError) as refused:
        run(PipeLayersNumberedFromOne(cls="GPTModelPipe"), BEFORE.replace("layer_number=layer_idx,", ""))
    assert "layer_number=<loop index>" in str(refused.value)
