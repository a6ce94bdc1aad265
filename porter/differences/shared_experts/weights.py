"""The shared experts' weights: HF's `mlp.shared_experts` (gate, up, down projections) in the
tree's `shared_experts` (a ParallelMLP: the fused gate+up split by rows half by half, the down
projection by columns), in every layer with experts. Pure copies both ways."""

from __future__ import annotations

from porter.differences.gated_mlp.weights import gate_up_weights
from porter.differences.moe.weights import sparse_layers
from porter.differences.shared_experts.rewrites import ATTR
from porter.weights import LayerWeights, Weight

HF = "mlp.shared_experts"


def shared_weights(layer: LayerWeights) -> None:
    if not sparse_layers(layer.config, layer.shape.num_layers)[layer.index]:
        return
    layout = layer.layout
    layer.add_after("mlp_out", ATTR, [
        *gate_up_weights(layout, ATTR, (f"{HF}.gate_proj.weight", f"{HF}.up_proj.weight")),
        Weight(f"{ATTR}.{layout.fc2}.weight", (f"{HF}.down_proj.weight",), "columns")])
