"""HF weights <-> the tree's layout (full, unsharded), one layer at a time, by pure tensor copies.

No arithmetic anywhere, so HF -> Megatron -> HF gives back the very same bits. What each
tensor of a transformer layer is made of comes from porter.weights (`ModelWeights`: the base
slots as the port's differences fill them); the layout (porter.layout.WeightLayout) says where
the embedding, the final norm and the untied head go, and the vocabulary padding.

The mapping is one function per direction for a transformer layer (`hf_layer_to_megatron`,
`megatron_layer_to_hf`) and small ones for the embedding, the final norm and the head. The
model is a stream of parts, in order: ("embedding", None, t), ("layer", i, {key: t}) for each
layer, ("final_norm", None, t), ("output", None, t or None); the conversions stream it part by
part (`hf_parts`, `hf_tensors`), so that no more than one layer is held at a time. A tensor is
copied only where its layout changes and the change is more than an order of rows (a split
of q, k and v, padding rows): a fusion of rows is its pieces in order (porter/convert/pieces.py),
and the rest are the very tensors read (views, mapped from the file), written out as they are. Every function also runs
on tensors of the meta device: that is how a conversion plans its files before reading a byte.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from porter.convert.pieces import first_rows, joined
from porter.errors import PorterError
from porter.layout import WeightLayout
from porter.weights import ModelShape, ModelWeights, gather_rows

Part = tuple  # (kind, layer index or None, tensor / {key: tensor} / None)


class Take:
    """HF tensors by name, each read when asked; `name in take` says whether the model has it."""

    def __init__(self, names: Container[str], read: Callable[[str], torch.Tensor], count: int | None = None) -> None:
        self.names = names
        self.read = read
        self.count = count

    @classmethod
    def of(cls, state: dict[str, torch.Tensor]) -> Take:
        return cls(state, state.__getitem__, len(state))

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            some = sorted(self.names)[:3] if isinstance(self.names, (dict, set, frozenset)) else []
            raise PorterError(f"the HF checkpoint has no tensor {name}", construct=name,
                              found=f"{self.count} tensors" + (f", e.g. {some}" if some else ""),
                              fix="pass the directory of the spec's HF model (save_pretrained)")
        return self.read(name)


@dataclass
class MegatronWeights:
    """One full copy of the model in the tree's layout, in memory, with the weights that say
    what each layer tensor is (porter.weights.ModelWeights). Layer keys are relative to a layer."""

    weights: ModelWeights
    embedding: torch.Tensor  # [padded vocab, h]
    layers: list[dict[str, torch.Tensor]]
    final_norm: torch.Tensor | None
    output: torch.Tensor | None  # [padded vocab, h]; None when tied
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> ModelShape:
        return self.weights.shape

    def parts(self) -> Iterator[Part]:
        yield "embedding", None, self.embedding
        for i, layer in enumerate(self.layers):
            yield "layer", i, layer
        yield "final_norm", None, self.final_norm
        yield "output", None, self.output

    @classmethod
    def collect(cls, parts: Iterator[Part], weights: ModelWeights, extra: dict | None = None) -> MegatronWeights:
        found: dict = {"layers": []}
        for kind, _, value in parts:
            if kind == "layer":
                found["layers"].append({k: joined(v) for k, v in value.items()})
            else:
                found[kind] = None if value is None else joined(value)
        return cls(weights=weights, embedding=found["embedding"], layers=found["layers"],
                   final_norm=found.get("final_norm"), output=found.get("output"), extra=extra or {})


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """t with zero rows below, `rows` in all (t itself when it has them)."""
    if t.shape[0] == rows:
        return t
    out = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)
    out[: t.shape[0]] = t
    return out


# -- HF -> the tree's layout ---------------------------------------------------------------------


def hf_layer_to_megatron(take: Take, i: int, weights: ModelWeights) -> dict[str, torch.Tensor]:
    """HF layer i (its tensors read through take) -> the tree's layer i, keys relative to the layer."""
    pre = f"model.layers.{i}."
    return {w.key: w.to_tree([take(pre + name) for name in w.hf]) for w in weights.layer(i)}


def hf_embedding_to_megatron(take: Take, padded: int) -> torch.Tensor:
    return pad_rows(take("model.embed_tokens.weight"), padded)


def hf_final_norm_to_megatron(take: Take) -> torch.Tensor:
    return take("model.norm.weight")


def hf_head_to_megatron(take: Take, config: dict, layout: WeightLayout, padded: int) -> torch.Tensor | None:
    """The untied head, padded (None when the tree ties it to the embedding)."""
    if layout.tied:
        return None
    if "lm_head.weight" not in take and config.get("tie_word_embeddings"):
        return pad_rows(take("model.embed_tokens.weight"), padded)
    return pad_rows(take("lm_head.weight"), padded)


def hf_parts(take: Take, weights: ModelWeights, tensor_parallel: int = 1) -> Iterator[Part]:
    """An HF model (its tensors read through take) -> the tree's full layout, part by part."""
    layout, shape, config = weights.layout, weights.shape, weights.config
    padded = layout.padded_vocab(shape.vocab_size, tensor_parallel)
    yield "embedding", None, hf_embedding_to_megatron(take, padded)
    for i in range(shape.num_layers):
        yield "layer", i, hf_layer_to_megatron(take, i, weights)
    yield "final_norm", None, hf_final_norm_to_megatron(take)
    yield "output", None, hf_head_to_megatron(take, config, layout, padded)


def hf_to_megatron(state: dict[str, torch.Tensor], config: dict, layout: WeightLayout, differences: Sequence,
                   tensor_parallel: int = 1) -> MegatronWeights:
    """An HF state dict + config -> one full copy in the tree's layout, in memory (`differences`:
    the port's, porter.weights)."""
    weights = ModelWeights(layout, ModelShape.from_hf(config), config, differences, state)
    return MegatronWeights.collect(hf_parts(Take.of(state), weights, tensor_parallel), weights)


# -- the tree's layout -> HF ---------------------------------------------------------------------


def megatron_layer_to_hf(layer: dict[str, torch.Tensor], i: int, weights: ModelWeights) -> dict[str, torch.Tensor]:
    """The tree's layer i (keys relative to the layer) -> HF's tensors of layer i; one that several
    of the tree's tensors each hold rows of (Weight.hf_rows) comes as their pieces, in row order."""
    pre = f"model.layers.{i}."
    state: dict = {}
    parts: dict[str, list] = {}  # an HF tensor several of the tree's tensors each hold rows of
    for weight in weights.layer(i):
        if weight.key not in layer:
            continue
        for n, (name, tensor) in enumerate(zip(weight.hf, weight.to_hf(layer[weight.key]), strict=True)):
            rows = weight.rows(n)
            if rows is None:
                state[pre + name] = tensor
            else:
                state.setdefault(pre + name, None)  # HF's order: where its first part is
                parts.setdefault(pre + name, []).append((rows, tensor))
    for name, held in parts.items():
        state[name] = gather_rows(name, held)
    return state


def hf_tensors(parts: Iterator[Part], weights: ModelWeights) -> Iterator[tuple[str, torch.Tensor]]:
    """The tree's full layout, part by part -> HF's (name, tensor), in HF's order (the embedding and
    the head may come as pieces, and go as pieces: porter/convert/pieces.py)."""
    v = weights.shape.vocab_size
    for kind, i, value in parts:
        if kind == "embedding":
            yield "model.embed_tokens.weight", first_rows(value, v)
        elif kind == "layer":
            yield from megatron_layer_to_hf(value, i, weights).items()
        elif kind == "final_norm":
            yield "model.norm.weight", value
        elif kind == "output" and value is not None:
            yield "lm_head.weight", first_rows(value, v)


def megatron_to_hf(model: MegatronWeights) -> dict[str, torch.Tensor]:
    """One full copy in the tree's layout -> an HF state dict (views of it where no copy is needed)."""
    return {name: joined(t) for name, t in hf_tensors(model.parts(), model.weights)}
