"""HF's fused projections seen as the unfused ones every probe reads: the output of
`self_attn.qkv_proj` cut into what q_proj, k_proj and v_proj would give (q: as wide as the
attention output projection's input; k and v: half the rest each), `mlp.gate_up_proj`'s into
gate_proj's and up_proj's halves. The layer's probes (the q, k, v projection, the rotary
rotation, the gated MLP's input...) then compare the same quantities as for any other family,
and a failure still names the tree's module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from porter.probe import LayerProbes


class UnfusedCaptures(Mapping):
    """HF's captures, plus each unfused module's output cut from its fused module's (on demand)."""

    def __init__(self, captures: Mapping, layer: str, fused: list) -> None:
        self.captures = captures
        self.parts = {f"{layer}.{part}": (f"{layer}.{f.module}", i, f)
                      for f in fused for i, part in enumerate(f.parts)}
        self.layer = layer

    def __getitem__(self, name: str):
        if name in self.captures or name not in self.parts:
            return self.captures[name]
        module, index, fused = self.parts[name]
        output = self.captures[module]
        if fused.equal:
            return output.chunk(len(fused.parts), dim=-1)[index]
        queries = self.captures[f"{self.layer}.self_attn.o_proj:input"].shape[-1]  # heads x head size
        keys = (output.shape[-1] - queries) // 2
        return output.split([queries, keys, keys], dim=-1)[index]

    def __iter__(self) -> Iterator[str]:
        yield from self.captures
        yield from (name for name in self.parts if name not in self.captures)

    def __len__(self) -> int:
        return len(set(self.captures) | set(self.parts))


def unfused_view(layer: LayerProbes, fused: list) -> None:
    """Every probe of the layer reads HF's captures through the unfused view."""
    if not fused:
        return

    def viewed(hf):
        return lambda captures: hf(UnfusedCaptures(captures, layer.hf, fused))

    layer.slots = {slot: [replace(probe, hf=viewed(probe.hf)) for probe in probes]
                   for slot, probes in layer.slots.items()}
