"""A transformer layer's weights as named slots: each tensor of the tree's layer, the HF tensors
it is made of, and how tensor-parallel ranks hold it (Megatron-LM's ModuleSpec, as data).

The base slots are GPT's layer with HF's LLaMA-family names (what every family porter converts
shares): input norm, the fused q, k, v projection laid out per key/value head
[ng, np/ng + 2, hn], the attention output projection, the post-attention norm, the MLP's input
and output projections. A difference fills or replaces slots where it changes the layer
(`Difference.weights(layer)`, in plan order): the gated MLP fuses gate and up, the bias puts a
bias beside each linear of its sites, rotary adds the frequencies a tree's rotary saves, the
a mixture replaces the MLP. `porter.convert` maps, shards and writes every layer from its list,
and verify's structure check reads it: no engine names a difference.

Every `join` and `split` is a pure copy (a fusion, a cut, a reshape), so HF -> Megatron -> HF
gives back the very same bits; each also runs on tensors of the meta device, which is how a
conversion plans its files before it reads a byte.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from porter.errors import PorterError
from porter.layout import WeightLayout

if TYPE_CHECKING:  # torch is imported where tensors move, not by the commands that only read a tree
    from torch import Tensor
# tensor-parallel roles: split by rows (a column-parallel linear's weight, its bias, a vocabulary),
# by columns (a row-parallel linear's weight), whole on every rank, or a fused pair whose halves
# are each split by rows (rank r holds [first_r; second_r]: the gate+up projection)
ROLES = ("rows", "columns", "replicated", "gate_up")


@dataclass(frozen=True)
class Rows:
    """Rows start..stop of an HF tensor of `total` rows: the part of it one tree tensor holds."""

    start: int
    stop: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop <= self.total:
            raise ValueError(f"rows {self.start}..{self.stop} of {self.total}")

    def of(self, tensor: Tensor, what: str) -> Tensor:
        """These rows of the whole HF tensor (a view)."""
        if tensor.shape[0] != self.total:
            raise PorterError(f"an HF tensor has {tensor.shape[0]} rows where {self.total} were expected",
                              construct=what,
                              found=f"{tuple(tensor.shape)}, rows {self.start}..{self.stop} of it wanted",
                              fix="pass the config.json the weights were saved with")
        return tensor[self.start:self.stop]


def gather_rows(name: str, parts: Sequence[tuple[Rows, Any]]) -> tuple:
    """One HF tensor from the parts several tree tensors hold of it ((rows, tensor or pieces)
    each, in any order): as pieces (porter/convert/pieces.py), its rows in order. Refused when
    the parts do not cover its rows once each, end to end."""
    at, total, out = 0, None, []
    for rows, value in sorted(parts, key=lambda part: part[0].start):
        pieces = value if isinstance(value, tuple) else (value,)
        count = sum(p.shape[0] for p in pieces)
        total = rows.total if total is None else total
        if rows.start != at or rows.total != total or count != rows.stop - rows.start:
            raise PorterError(
                f"the tree's tensors do not make HF's {name} once end to end", construct=name,
                found=", ".join(f"rows {r.start}..{r.stop} of {r.total}" for r, _ in parts) + f" (at row {at}: "
                      f"rows {rows.start}..{rows.stop} of {rows.total}, {count} given)",
                fix="report this as a bug in porter: the weights of a slot disagree on the fused tensor's rows")
        out += pieces
        at = rows.stop
    if total is None or at != total:
        raise PorterError(f"the tree's tensors do not make HF's {name} whole", construct=name,
                          found=f"rows 0..{at} of {total} made", fix="report this as a bug in porter: a part of the "
                                                                       "fused tensor has no tree tensor")
    return tuple(out)


@dataclass(frozen=True)
class Weight:
    """One tensor of the tree's transformer layer and the HF tensors it is made of.

    `key` is relative to the tree's layer (its state dict: "attention.query_key_value.weight"),
    each of `hf` relative to HF's layer ("self_attn.q_proj.weight" of model.layers.<i>.).
    `join` makes the tree's tensor from HF's (in `hf` order): a tensor, or, where the tree's rows
    are HF's rows in another order (a fusion), a tuple of pieces whose rows one after the other
    are the tensor (porter/convert/pieces.py: written out back to back, never put together);
    `split` HF's from the tree's;
    left out, the one tensor is the other as it is. `made`: a tensor the tree computes itself and
    saves (a rotary embedding's frequencies), with no HF tensor: made on the way in, dropped on
    the way out. `file`: the checkpoint file it is saved in when the engine saves it apart from
    the layer (DeepSpeed writes some tensors to files of their own): (layer index, index among the
    layers holding such tensors, tensor-parallel rank) -> (file name, key in that file).
    `hf_rows`: where the tree's tensor is made of a part of an HF tensor only (a fused HF
    projection the tree keeps in several tensors: Phi-3's gate_up_proj as a gate tensor and an
    up tensor), the rows of each HF tensor it is made of (in `hf` order; None: all of it): `join`
    gets those rows, `split` gives them back, and the engine makes the HF tensor from every
    weight of the layer holding a part of it (`gather_rows`)."""

    key: str
    hf: tuple[str, ...] = ()
    role: str = "replicated"
    join: Callable[[Sequence[Tensor]], Tensor | tuple[Tensor, ...]] | None = None
    split: Callable[[Tensor], Sequence[Tensor]] | None = None
    made: Callable[[], Tensor] | None = None
    file: Callable[[int, int, int], tuple[str, str]] | None = None
    hf_rows: tuple[Rows | None, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"{self.key}: role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.hf_rows and len(self.hf_rows) != len(self.hf):
            raise ValueError(f"{self.key}: {len(self.hf_rows)} row ranges for {len(self.hf)} HF tensors")

    def rows(self, index: int) -> Rows | None:
        """The rows of HF tensor `hf[index]` this weight is made of (None: all of it)."""
        return self.hf_rows[index] if self.hf_rows else None

    def to_tree(self, tensors: Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:
        """HF's tensors (in `hf` order; whole: their rows of `hf_rows` taken here) -> the tree's
        (a tensor, or its pieces)."""
        if self.made is not None:
            return self.made()
        if self.hf_rows:
            tensors = [t if rows is None else rows.of(t, f"{self.key} <- {name}")
                       for t, rows, name in zip(tensors, self.hf_rows, self.hf, strict=True)]
        return self.join(tensors) if self.join is not None else tensors[0]

    def to_hf(self, tensor: Tensor) -> Sequence[Tensor]:
        """The tree's tensor -> HF's, in `hf` order (none for a tensor the tree makes itself)."""
        if self.made is not None:
            return ()
        return self.split(tensor) if self.split is not None else (tensor,)


@dataclass(frozen=True)
class ModelShape:
    """The numbers that fix every tensor's shape, read from an HF config (HF names in comments).

    Everything else a model's config says (norm epsilon, rotary base and scaling, token ids...)
    is not a shape: it rides along as the HF config itself and as the checkpoint's args."""

    num_layers: int  # num_hidden_layers
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int  # intermediate_size
    vocab_size: int  # the real vocabulary; Megatron pads it
    kv_heads: int = 0  # num_key_value_heads; 0: one per attention head
    head_dim: int = 0  # head_dim; 0: hidden_size / num_attention_heads

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_heads", self.kv_heads or self.num_attention_heads)
        object.__setattr__(self, "head_dim", self.head_dim or self.hidden_size // self.num_attention_heads)

    @classmethod
    def from_hf(cls, config: dict, path: str = "config.json") -> ModelShape:
        missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
                   if not isinstance(config.get(k), int)]
        if missing:
            raise PorterError(
                "the HF config lacks the model's sizes", file=path, construct=", ".join(missing),
                found="missing or not whole numbers: " + ", ".join(missing),
                fix="pass the config.json of a causal LM saved by transformers (save_pretrained)",
            )
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        if heads % kv_heads:
            raise PorterError(
                f"{heads} attention heads do not share {kv_heads} key/value heads evenly", file=path,
                construct="num_attention_heads a multiple of num_key_value_heads",
                found=f"num_attention_heads = {heads}, num_key_value_heads = {kv_heads}",
                fix="check the config: each key/value head serves the same number of query heads",
            )
        return cls(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"], num_attention_heads=heads,
                   ffn_hidden_size=config["intermediate_size"], vocab_size=config["vocab_size"], kv_heads=kv_heads,
                   head_dim=config.get("head_dim") or 0)

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.kv_heads

    def hf_sizes(self) -> dict:
        sizes = dict(num_hidden_layers=self.num_layers, hidden_size=self.hidden_size,
                     num_attention_heads=self.num_attention_heads, num_key_value_heads=self.kv_heads,
                     intermediate_size=self.ffn_hidden_size, vocab_size=self.vocab_size)
        if self.head_dim != self.hidden_size // self.num_attention_heads:
            sizes["head_dim"] = self.head_dim
        return sizes


def fuse_qkv(q: Tensor, k: Tensor, v: Tensor, kv_heads: int) -> tuple[Tensor, ...]:
    """HF q [np*hn, ...], k and v [ng*hn, ...] -> fused [ng * (np/ng + 2) * hn, ...], per key/value
    head: as pieces (porter/convert/pieces.py), head g's q, k and v rows, views of HF's tensors."""
    rest = q.shape[1:]
    q, k, v = (t.reshape(kv_heads, -1, *rest) for t in (q, k, v))
    return tuple(part[g] for g in range(kv_heads) for part in (q, k, v))


def split_qkv(qkv: Tensor, shape: ModelShape) -> list[Tensor]:
    """The fused per-key/value-head projection -> HF q, k, v (copied only where the groups interleave)."""
    rest = qkv.shape[1:]
    queries = shape.heads_per_group * shape.head_dim
    grouped = qkv.reshape(shape.kv_heads, queries + 2 * shape.head_dim, *rest)
    q = grouped[:, :queries]
    k = grouped[:, queries: queries + shape.head_dim]
    v = grouped[:, queries + shape.head_dim:]
    return [t.reshape(-1, *rest) for t in (q, k, v)]


@dataclass
class LayerWeights:
    """The weights of transformer layer `index`, by slot, in the tree's state-dict order.

    `config`: the HF config (numbers a difference's weights need beyond the shape, a layer
    pattern); `hf_names`: the HF model's tensor names where it is read (None when HF tensors
    are written), for a difference whose HF tensors come in more than one spelling."""

    layout: WeightLayout
    shape: ModelShape
    config: dict[str, Any]
    index: int = 0
    hf_names: Container[str] | None = None
    slots: dict[str, list[Weight]] = field(default_factory=dict)

    SLOTS = ("input_norm", "qkv", "dense", "post_norm", "mlp_in", "mlp_out")

    def __post_init__(self) -> None:
        if self.slots:
            return
        layout, shape = self.layout, self.shape
        a, m = layout.attention, layout.mlp
        self.slots = {
            "input_norm": [Weight(f"{layout.input_norm}.weight", ("input_layernorm.weight",))],
            "qkv": [Weight(f"{a}.{layout.qkv}.weight", tuple(f"self_attn.{x}_proj.weight" for x in "qkv"), "rows",
                           join=lambda t: fuse_qkv(*t, shape.kv_heads), split=lambda t: split_qkv(t, shape))],
            "dense": [Weight(f"{a}.{layout.dense}.weight", ("self_attn.o_proj.weight",), "columns")],
            "post_norm": [Weight(f"{layout.post_attention_norm}.weight", ("post_attention_layernorm.weight",))],
            "mlp_in": [Weight(f"{m}.{layout.fc1}.weight", ("mlp.up_proj.weight",), "rows")],
            "mlp_out": [Weight(f"{m}.{layout.fc2}.weight", ("mlp.down_proj.weight",), "columns")],
        }

    def replace(self, slot: str, weights: Sequence[Weight]) -> None:
        self.slots[slot] = list(weights)

    def add(self, slot: str, weights: Sequence[Weight]) -> None:
        """More weights in a slot (a bias beside its weight), or a slot of a difference's own."""
        self.slots.setdefault(slot, []).extend(weights)

    def add_after(self, slot: str, new: str, weights: Sequence[Weight]) -> None:
        """A slot of a difference's own, after `slot` (state-dict order follows the forward pass)."""
        items = list(self.slots.items())
        at = next(i for i, (name, _) in enumerate(items) if name == slot) + 1
        self.slots = dict(items[:at] + [(new, list(weights))] + items[at:])

    def find(self, key: str) -> Weight | None:
        return next((w for w in self.all() if w.key == key), None)

    def all(self) -> list[Weight]:
        return [w for weights in self.slots.values() for w in weights]


class ModelWeights:
    """The weights of one model, layer by layer: the base slots as the wanted differences (in
    plan order) fill them, for the tree's layout, the model's shape and its HF config.

    `hf_names`: the HF tensors at hand where an HF model is read (None where one is written)."""

    def __init__(self, layout: WeightLayout, shape: ModelShape, config: dict[str, Any], differences: Sequence[Any],
                 hf_names: Container[str] | None = None) -> None:
        self.layout = layout
        self.shape = shape
        self.config = config
        self.differences = tuple(differences)
        self.hf_names = hf_names
        self.layer = cache(self._layer)

    def _layer(self, index: int) -> tuple[Weight, ...]:
        """Every weight of transformer layer `index`, in the tree's order."""
        layer = LayerWeights(self.layout, self.shape, self.config, index, self.hf_names)
        for difference in self.differences:
            difference.weights(layer)
        return tuple(layer.all())

    def roles(self, index: int) -> dict[str, str]:
        """Layer `index`'s tensor-parallel roles, by the tree's key."""
        return {w.key: w.role for w in self.layer(index)}

    def apart(self, index: int) -> list[Weight]:
        """Layer `index`'s weights the engine saves in files of their own."""
        return [w for w in self.layer(index) if w.file is not None]

    def check_checkpoint(self, pipe: bool, tp: int) -> None:
        """Each difference refuses the checkpoints it cannot have (an engine, a tensor-parallel size)."""
        for difference in self.differences:
            difference.check_checkpoint(self.layout, pipe, tp)

    def client_state(self) -> dict[str, Any]:
        """What the differences add to a checkpoint's client state (counts DeepSpeed's engine lists)."""
        state: dict[str, Any] = {}
        for difference in self.differences:
            state.update(difference.client_state(self))
        return state
