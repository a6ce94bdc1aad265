"""What verify compares in a sandwich layer: the four norms, each against its HF twin (a post-norm
layer: the two output norms)."""

from __future__ import annotations

from porter.differences.norm_placement.rewrites import ATTENTION_NORM, MLP_NORM
from porter.probe import LayerProbes


def sandwich_probes(layer: LayerProbes) -> None:
    """The attention output norm after the output projection, the pre-MLP norm (the tree's
    post-attention norm, HF's pre_feedforward_layernorm), the MLP output norm after the MLP."""
    layer.add_after("dense", "attention_output_norm", [
        layer.probe(ATTENTION_NORM, "attention output norm (HF's post_attention_layernorm)",
                    layer.ref("post_attention_layernorm"))])
    layer.replace("post_norm", [
        layer.probe(layer.layout.post_attention_norm, "pre-MLP norm (HF's pre_feedforward_layernorm)",
                    layer.ref("pre_feedforward_layernorm"))])
    layer.add_after("mlp_out", "mlp_output_norm", [
        layer.probe(MLP_NORM, "MLP output norm (HF's post_feedforward_layernorm)",
                    layer.ref("post_feedforward_layernorm"))])


def post_probes(layer: LayerProbes) -> None:
    """After sandwich_probes: a post-norm layer normalises nothing before attention or the MLP."""
    layer.replace("input_norm", [])
    layer.replace("post_norm", [])
