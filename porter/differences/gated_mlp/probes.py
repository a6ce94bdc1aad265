"""What verify compares for a gated MLP: its input projection(s) and the gated activation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.probe import LayerProbes

# the gated activation (WeightLayout.activation), as the report names it
ACTIVATIONS = {"swiglu": "SwiGLU activation, silu(gate) * up", "geglu": "GeGLU activation, gelu_tanh(gate) * up"}


def gated_probes(layer: LayerProbes) -> None:
    """The gate and up projections (one fused projection in the tree's half order, or two), and
    the activation's output, silu(gate) * up or gelu_tanh(gate) * up."""
    import torch
    layout, m = layer.layout, layer.layout.mlp
    if layout.up:
        layer.replace("mlp_in", [
            layer.probe(f"{m}.{layout.fc1}", "gate projection", layer.ref("mlp.gate_proj"), take="output+bias",
                        combine="cat"),
            layer.probe(f"{m}.{layout.up}", "up projection", layer.ref("mlp.up_proj"), take="output+bias",
                        combine="cat")])
    else:
        def gate_up(c, hf=layer.hf):
            """The fused projection's output, in the tree's half order (gate first or second)."""
            gate, up = c[f"{hf}.mlp.gate_proj"], c[f"{hf}.mlp.up_proj"]
            return torch.cat((gate, up) if layout.gate_first else (up, gate), dim=-1)

        layer.replace("mlp_in", [layer.probe(f"{m}.{layout.fc1}", "fused gate and up projections", gate_up,
                                             take="output+bias", combine="gate_up")])
    layer.replace("mlp_act", [layer.probe(f"{m}.{layout.fc2}", f"{ACTIVATIONS[layout.activation]} (input of the MLP "
                                          "output projection)", layer.ref("mlp.down_proj:input"), take="input",
                                          combine="cat", name=f"{layer.base}.{m}")])
