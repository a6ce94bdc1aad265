"""The frequencies a tree's own rotary embedding saves (a persistent `inv_freq` buffer, Habana
7086aadb's CoreAttention.rotary_emb): the tree computes them itself, HF saves none, so a
converted checkpoint gets them made from the config (its strict --load wants them) and the way
back drops them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.weights import LayerWeights, Weight


def rope_theta(config: dict) -> float:
    """The rotary base of an HF config (transformers 5 `rope_parameters`, or `rope_theta`; a model
    with a rotary per layer type, Gemma-3: its global layers')."""
    from porter.hf_reading import rope_parameters_of

    theta = rope_parameters_of(config).get("rope_theta")
    return float(theta if theta is not None else 10000.0)


def rotary_inv_freq(dim: int, theta: float) -> torch.Tensor:
    """1 / theta^(2i / dim), i < dim / 2, in fp32: the frequencies a rotary embedding computes."""
    import torch
    return 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))


def saved_frequencies(layer: LayerWeights) -> None:
    if not layer.layout.rotary_buffers:
        return
    from porter.hf_reading import hf_rotary_dim

    # sized by the channels that rotate (partial rotary: int(head_dim x partial_rotary_factor))
    dim, theta = hf_rotary_dim(layer.config, layer.shape.head_dim), rope_theta(layer.config)
    layer.add("rotary_buffers", [Weight(key, made=lambda: rotary_inv_freq(dim, theta))
                                 for key in layer.layout.rotary_buffers])
