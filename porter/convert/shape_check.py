"""Every tensor's shape against the config, before a conversion writes anything.

A state dict whose k_proj has the rows of 8 key/value heads under a config that says 4 would
otherwise be cut into the wrong groups without a word (or fail deep inside a reshape). Both
ways are checked, and neither names a difference:
- HF: each tensor of the file against the one transformers' class builds from the config (the
  model made on the meta device: shapes only, no memory), so the config is read exactly as
  transformers reads it;
- a checkpoint: each tensor of the tree's layout against what the weights' slots
  (porter.weights) make of the HF tensors its args imply (the same join, on meta tensors).
A mismatch is refused (exit 2) naming the tensor, the shape the config implies and the shape
found. Only names and shapes are looked at: a streaming caller checks from the files' headers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from porter.errors import PorterError
from porter.weights import ModelWeights


def hf_shapes(config: Mapping, hf_class: str) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor transformers' class of the config holds (the class the
    file's `architectures` names where it is a causal LM, else `hf_class`)."""
    model = meta_model(config, hf_class)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def meta_model(config: Mapping, hf_class: str):
    """transformers' model of the config, on the meta device (no memory, no initialisation)."""
    import copy

    import transformers

    from porter.hf_config import causal_lm_class

    cls = causal_lm_class(config, hf_class)
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        hf_config = cls.config_class.from_dict(copy.deepcopy(dict(config)))
    finally:
        logging.set_verbosity(level)
    with torch.device("meta"):
        return cls(hf_config)


def parameter_count(config: Mapping, hf_class: str) -> int:
    """The parameters of the model a config.json describes (tied tensors once)."""
    return sum(p.numel() for p in meta_model(config, hf_class).parameters())


def check_hf(shapes: Mapping[str, Sequence[int]], config: Mapping, hf_class: str, path: str) -> None:
    """Refuse an HF state dict (name -> shape) whose tensors contradict its config."""
    expected = hf_shapes(config, hf_class)
    _refuse([(name, expected[name], tuple(found)) for name, found in shapes.items()
             if name in expected and tuple(found) != expected[name]], path, "config.json", _why(config))


def _why(config: Mapping) -> str:
    from porter.hf_reading import reading
    from porter.weights import ModelShape

    read = reading(dict(config))
    shape = ModelShape.from_hf(dict(read))
    experts = read.get("num_local_experts")
    return (f"hidden_size {shape.hidden_size}, {shape.num_attention_heads} heads of {shape.head_dim}, "
            f"{shape.kv_heads} key/value heads, intermediate_size {shape.ffn_hidden_size}, "
            f"vocab_size {shape.vocab_size}" + (f", {experts} experts" if experts else ""))


def tree_shapes(weights: ModelWeights, expected_hf: Mapping[str, tuple[int, ...]], i: int) -> dict[str, tuple]:
    """Layer i's tensors of the tree (key -> shape), as its slots make them of the HF tensors of
    the shapes `expected_hf` (a slot with an HF tensor the class lacks is left out)."""
    pre = f"model.layers.{i}."
    out = {}
    for weight in weights.layer(i):
        if weight.made is not None or not all(pre + n in expected_hf for n in weight.hf):
            continue
        metas = [torch.empty(expected_hf[pre + n], device="meta") for n in weight.hf]
        out[weight.key] = tuple(weight.to_tree(metas).shape)
    return out


def check_megatron(parts: Iterator, weights: ModelWeights, hf_class: str, path: str) -> None:
    """Refuse a checkpoint (its parts on the meta device) whose tensors contradict the args it
    carries (weights.config: the HF config the args give)."""
    expected_hf = hf_shapes(weights.config, hf_class)
    shape = weights.shape
    h, v = shape.hidden_size, shape.vocab_size
    bad = []

    def rows_of(pieces) -> tuple[int, int]:
        pieces = pieces if isinstance(pieces, tuple) else (pieces,)
        cols = {tuple(p.shape[1:]) for p in pieces}
        return sum(p.shape[0] for p in pieces), (next(iter(cols))[0] if len(cols) == 1 and cols != {()} else -1)

    for kind, i, value in parts:
        if kind in ("embedding", "output") and value is not None:
            rows, cols = rows_of(value)
            if cols != h or rows < v:
                bad.append((f"{'word embeddings' if kind == 'embedding' else 'output layer'}",
                            (f">= {v}", h), (rows, cols)))
        elif kind == "final_norm" and value is not None and tuple(value.shape) != (h,):
            bad.append(("final norm", (h,), tuple(value.shape)))
        elif kind == "layer":
            expected = tree_shapes(weights, expected_hf, i)
            bad += [(f"layer {i}: {key}", expected[key], tuple(t.shape)) for key, t in value.items()
                    if key in expected and tuple(t.shape) != expected[key]]
    why = (f"num_layers {shape.num_layers}, hidden_size {h}, {shape.num_attention_heads} heads of {shape.head_dim}, "
           f"{shape.kv_heads} key/value groups, ffn_hidden_size {shape.ffn_hidden_size}")
    _refuse(bad, path, "the checkpoint's args", why)


def _refuse(bad: list, path: str, source: str, why: str) -> None:
    if not bad:
        return
    name, expected, found = bad[0]
    more = f" (and {len(bad) - 1} more: " + ", ".join(b[0] for b in bad[1:4]) + ("..." if len(bad) > 4 else "") + ")" \
        if len(bad) > 1 else ""
    raise PorterError(
        f"tensor {name} has shape {list(found)}, but {source} implies {list(expected)}{more}",
        file=path, construct=f"tensors shaped as {source} says ({why})",
        found=f"{name}: {list(found)}, expected {list(expected)}",
        fix=f"the weights and {source} are of different models: pass the config.json the weights were saved with",
    )
