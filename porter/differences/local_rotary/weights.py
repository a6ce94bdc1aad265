"""The frequencies of the local layers' rotary embedding, where the tree's class saves them.

The rotary difference makes every saved `inv_freq` of a layer (porter/profile/layout.py lists
them) with the global base. Two shapes of the local one (detect.py):
- handed (OpenLLM-France a106b248): a local layer's attention builds a second RotaryEmbedding,
  `local_rotary_pos_emb` (handed.py); only a local layer (HF's `layer_types`: sliding_attention)
  has its frequencies, made with the local base; a global layer has none;
- built in each attention (EleutherAI's class, Habana 7086aadb, BigScience): a local layer's own
  rotary embedding is built again with the local base (rewrites.py), under the same name: on a
  local layer its saved frequencies are made with the local base, on a global one with the global.
"""

from __future__ import annotations

from dataclasses import replace

from porter.differences.local_rotary import rope_fields
from porter.differences.local_rotary.handed import LOCAL
from porter.differences.rotary.weights import rotary_inv_freq
from porter.weights import LayerWeights


def local_frequencies(layer: LayerWeights) -> None:
    handed = f"{layer.layout.attention}.{LOCAL.removeprefix('self.')}.inv_freq"
    saved = layer.slots.get("rotary_buffers", [])
    if not saved:
        return
    own = not any(w.key == handed for w in saved)  # no second one: the layer's own is rebuilt on local layers
    local = rope_fields.local_layer(layer.config, layer.index)
    theta, head_dim = rope_fields.local_theta(layer.config), layer.shape.head_dim
    kept = []
    for weight in saved:
        if weight.key == handed and not local:
            continue  # a global layer: no local rotary embedding
        if local and theta is not None and (own or weight.key == handed):
            weight = replace(weight, made=lambda: rotary_inv_freq(head_dim, float(theta)))
        kept.append(weight)
    layer.replace("rotary_buffers", kept)
