"""The frequencies of the local layers' own rotary embedding, where the tree's class saves them.

The local layers build the tree's RotaryEmbedding with the local base (handed.py); a tree whose
class registers `inv_freq` as a saved buffer (OpenLLM-France a106b248) saves it in those layers'
checkpoints, so the tree's layout lists it among the rotary buffers (porter/profile/layout.py)
and the rotary difference makes one for every layer, with the global base. Here: only a local
layer (HF's `layer_types`: sliding_attention) has one, made with the local base; a global layer
has none (its attention builds no second rotary embedding)."""

from __future__ import annotations

from dataclasses import replace

from porter.differences.local_rotary import rope_fields
from porter.differences.local_rotary.handed import LOCAL
from porter.differences.rotary.weights import rotary_inv_freq
from porter.hf_config import LOCAL_LAYERS
from porter.weights import LayerWeights


def local_frequencies(layer: LayerWeights) -> None:
    key = f"{layer.layout.attention}.{LOCAL.removeprefix('self.')}.inv_freq"
    saved = layer.slots.get("rotary_buffers", [])
    if not any(w.key == key for w in saved):
        return
    local = _is_local(layer.config, layer.index)
    theta, head_dim = rope_fields.local_theta(layer.config), layer.shape.head_dim
    kept = []
    for weight in saved:
        if weight.key == key and local is False:
            continue  # a global layer: no local rotary embedding
        if weight.key == key and theta is not None:
            weight = replace(weight, made=lambda: rotary_inv_freq(head_dim, float(theta)))
        kept.append(weight)
    layer.replace("rotary_buffers", kept)


def _is_local(config: dict, index: int) -> bool | None:
    """Is layer `index` under the sliding window: HF's `layer_types`, else Gemma-3's older
    `sliding_window_pattern` (every N-th layer global); None when the config says neither."""
    types = config.get("layer_types")
    if types and index < len(types):
        return types[index] == LOCAL_LAYERS
    pattern = config.get("sliding_window_pattern")
    if pattern:
        return (index + 1) % int(pattern) != 0
    return None
