"""What verify compares where a layer has shared experts: the routed experts' output alone (HF's
MoE block adds the shared experts' to it), then the shared experts' output."""

from __future__ import annotations

from porter.differences.moe.weights import sparse_layers
from porter.differences.shared_experts.rewrites import ATTR
from porter.probe import LayerProbes


def shared_probes(layer: LayerProbes) -> None:
    if not sparse_layers(layer.config, layer.num_layers)[layer.i]:
        return

    def routed(c, hf=layer.hf):
        """HF's routed experts' output: [b * s, h] (tokens of the batch in a row) -> [b, s, h]."""
        b, s = c["model.embed_tokens"].shape[:2]
        return c[f"{hf}.mlp.experts"].reshape(b, s, -1)

    layer.replace("mlp_out", [layer.probe(layer.layout.mlp, "MoE layer: the routed experts' output, weighted by the "
                                          "router (the shared experts' comes next)", routed)])
    layer.add_after("mlp_out", ATTR, [layer.probe(ATTR, "shared experts (a dense MLP every token goes through)",
                                                  layer.ref("mlp.shared_experts"), take="output+bias")])
