"""The grouped routing's weights: DeepSeek-V3's correction bias, beside the router's weight.

HF keeps it at `mlp.gate.e_score_correction_bias` (a saved buffer, fp32) in every layer with
experts; the tree at `<mlp>.deepspeed_moe.gate.e_score_correction_bias` (GroupedRouter's
buffer), in the layer's own file next to the router, whole on every rank. A pure copy.
"""

from __future__ import annotations

from porter.differences.moe.weights import MEMORY, ROUTER, sparse_layers
from porter.weights import LayerWeights, Weight

BIAS = "e_score_correction_bias"


def correction_bias(layer: LayerWeights) -> None:
    if not sparse_layers(layer.config, layer.shape.num_layers)[layer.index]:
        return
    router = f"{layer.layout.mlp}.{ROUTER}"
    layer.add("mlp_in", [Weight(router.removesuffix("wg.weight") + BIAS, (f"{MEMORY}.gate.{BIAS}",))])
