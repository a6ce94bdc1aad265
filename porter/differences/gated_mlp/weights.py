"""The gated MLP's weights: HF's gate and up projections in the tree's MLP.

One fused projection [gate; up] (porter's swiglu.py, and microsoft's; the half order the tree
uses, read into the layout as `gate_first`), split by tensor-parallel ranks half by half
(rank r holds [gate_r; up_r], role "gate_up"); or two projections, the first the gate, the
second the up one (Habana's hand port). Pure copies both ways.
"""

from __future__ import annotations

from porter.weights import LayerWeights, Weight

GATE_UP = ("mlp.gate_proj.weight", "mlp.up_proj.weight")


def gated_weights(layer: LayerWeights) -> None:
    layer.replace("mlp_in", gate_up_weights(layer.layout, layer.layout.mlp, GATE_UP))


def gate_up_weights(layout, module: str, hf: tuple[str, str]) -> list[Weight]:
    """A gated MLP's input projection(s) at `module` of the tree's layer, from HF's (gate, up)."""
    if layout.up:
        return [Weight(f"{module}.{layout.fc1}.weight", hf[:1], "rows"),
                Weight(f"{module}.{layout.up}.weight", hf[1:], "rows")]
    first = layout.gate_first

    def join(tensors):
        gate, up = tensors
        return (gate, up) if first else (up, gate)  # pieces: the halves in order, never put together

    def split(fused):
        a, b = fused.chunk(2, dim=0)
        return (a, b) if first else (b, a)

    return [Weight(f"{module}.{layout.fc1}.weight", hf, "gate_up", join, split)]
