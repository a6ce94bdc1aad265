"""The biases a spec keeps, site by site: beside each weight of a biased site, its bias.

A bias is laid out as its weight's rows are (the fused q, k, v per key/value head, the fused
gate+up halves), so it is made with the same join and split; it is split over tensor-parallel
ranks as its weight's rows are, and whole on every rank where its weight is split by columns
(a row-parallel linear adds its bias after the reduction).
"""

from __future__ import annotations

from dataclasses import replace

from porter.weights import LayerWeights

# the layout's bias flags (porter/differences/bias: layout()) -> the slots they put a bias in
SITES = {"qkv_bias": ("qkv",), "attention_output_bias": ("dense",), "mlp_bias": ("mlp_in", "mlp_out")}
BIAS_ROLE = {"rows": "rows", "gate_up": "gate_up", "columns": "replicated", "replicated": "replicated"}


def bias_weights(layer: LayerWeights) -> None:
    for flag, slots in SITES.items():
        if not getattr(layer.layout, flag):
            continue
        for slot in slots:
            weights = [w for w in layer.slots.get(slot, []) if w.key.endswith(".weight") and w.made is None]
            layer.add(slot, [replace(w, key=w.key.removesuffix(".weight") + ".bias",
                                     hf=tuple(n.removesuffix(".weight") + ".bias" for n in w.hf),
                                     role=BIAS_ROLE[w.role]) for w in weights])
