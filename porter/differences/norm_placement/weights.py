"""The sandwich layer's norm weights, HF <-> the tree (Gemma-2/3's four norms per layer).

HF's post_attention_layernorm normalises the attention OUTPUT: it is the tree's
attention_output_layernorm; the tree's post_attention_layernorm (the norm before the MLP) is
HF's pre_feedforward_layernorm; HF's post_feedforward_layernorm is the tree's
mlp_output_layernorm. Each is a copy, whole on every tensor-parallel rank.
"""

from __future__ import annotations

from porter.differences.norm_placement.rewrites import ATTENTION_NORM, MLP_NORM
from porter.weights import LayerWeights, Weight


def sandwich_weights(layer: LayerWeights) -> None:
    layout = layer.layout
    layer.replace("post_norm", [Weight(f"{layout.post_attention_norm}.weight", ("pre_feedforward_layernorm.weight",))])
    layer.add_after("dense", "attention_output_norm",
                    [Weight(f"{ATTENTION_NORM}.weight", ("post_attention_layernorm.weight",))])
    layer.add_after("mlp_out", "mlp_output_norm",
                    [Weight(f"{MLP_NORM}.weight", ("post_feedforward_layernorm.weight",))])
