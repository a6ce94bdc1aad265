"""The gated MLP's weights: HF's gate and up projections in the tree's MLP.

One fused projection [gate; up] (porter's swiglu.py, and microsoft's; the half order the tree
uses, read into the layout as `gate_first`), split by tensor-parallel ranks half by half
(rank r holds [gate_r; up_r], role "gate_up"); or two projections, the first the gate, the
second the up one (Habana's hand port). Pure copies both ways.
"""

from __future__ import annotations

import torch

from porter.weights import LayerWeights, Weight

GATE_UP = ("mlp.gate_proj.weight", "mlp.up_proj.weight")


def gated_weights(layer: LayerWeights) -> None:
    layout, m = layer.layout, layer.layout.mlp
    if layout.up:
        layer.replace("mlp_in", [Weight(f"{m}.{layout.fc1}.weight", GATE_UP[:1], "rows"),
                                 Weight(f"{m}.{layout.up}.weight", GATE_UP[1:], "rows")])
        return
    first = layout.gate_first

    def join(tensors):
        gate, up = tensors
        return torch.cat((gate, up) if first else (up, gate), dim=0)

    def split(fused):
        a, b = fused.chunk(2, dim=0)
        return (a, b) if first else (b, a)

    layer.replace("mlp_in", [Weight(f"{m}.{layout.fc1}.weight", GATE_UP, "gate_up", join, split)])
