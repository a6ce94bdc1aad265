"""The sandwich layer's norm weights, HF <-> the tree (Gemma-2/3's four norms per layer).

HF's post_attention_layernorm normalises the attention OUTPUT: it is the tree's
attention_output_layernorm; the tree's post_attention_layernorm (the norm before the MLP) is
HF's pre_feedforward_layernorm; HF's post_feedforward_layernorm is the tree's
mlp_output_layernorm. Each is a copy, whole on every tensor-parallel rank. A post-norm layer
(OLMo-2) has the two output norms under the same HF names, and neither an input norm nor a norm
before the MLP.
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


def post_weights(layer: LayerWeights) -> None:
    """After sandwich_weights: no input norm, no norm before the MLP (identities in the tree)."""
    layer.replace("input_norm", [])
    layer.replace("post_norm", [])
