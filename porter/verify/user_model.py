"""verify's reference for a user's own model: transformers' class, built from the user's
config.json as transformers reads it.

With a config.json as MODEL the reference must not come from porter's reading of the file
(a misreading would sit on both sides and the proof could not see it). So the user's file
itself, with only its sizes shrunk, goes to transformers' config class (`from_dict`, what
`from_pretrained` does) and to porter's reader, each on its own: the reference model is
transformers', the port's numbers are porter's.

What shrinks is what must for a CPU: layers, width and vocabulary. Every ratio and every other
number stays as published: the query heads per key/value head, a head size that is not
hidden / heads (kept as the same fraction of the width), the MLP's multiple of the width, the
rope type with all its numbers, tying, biases, experts and top-k. A difference shrinks what of
its own would prove nothing at this size (`Difference.shrink_hf`: sliding_window makes a window
shorter than the batch); the report says what shrank, and which of the differences' fields
stay as published.

With `--hf DIR` nothing shrinks: the user's own weights go through both sides, if they fit in
memory (`memory_needed`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from porter.convert.shape_check import parameter_count
from porter.errors import PorterError
from porter.hf_reading import hf_rotary_dim, reading, rope_parameters_of

if TYPE_CHECKING:
    from porter.spec import Differences

HEAD_SIZE = 16  # the tiny model's head size, when the published one is larger
# the fields the sizes' shrinking decides (the report's shrunk list names each, changed or not)
SIZES = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size",
         "intermediate_size", "vocab_size")


@dataclass
class Shrunk:
    config: dict  # the user's config.json with its sizes replaced
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int
    shrunk: list[str] = field(default_factory=list)  # "layers 32 -> 2", ...
    kept: list[str] = field(default_factory=list)  # what stays as published, said outright


def shrink(raw: dict, differences: Differences, num_layers: int = 2, heads: int = 4, vocab: int = 256,
           seq_length: int = 32) -> Shrunk:
    """The config with its sizes shrunk and every ratio and structural number kept; each of the
    spec's differences then shrinks what of its own would prove nothing at this size
    (`Difference.shrink_hf`: a window longer than the batch)."""
    read = reading(raw)
    H, W = read["num_attention_heads"], read["hidden_size"]
    K = read.get("num_key_value_heads") or H
    D = read.get("head_dim") or W // H
    F, L, V = read["intermediate_size"], read["num_hidden_layers"], read["vocab_size"]
    per_group = H // K
    if per_group == 1:
        K2 = H2 = min(H, heads)
    else:
        K2 = min(K, 2)
        H2 = K2 * per_group
    # a rope parameter with a number per rotary frequency (LongRoPE's factors) fixes the head size
    rotated = hf_rotary_dim(read, D)  # transformers' rotary dimension (partial rotary: fewer channels)
    per_frequency = any(isinstance(v, list) and len(v) == rotated // 2 for v in rope_parameters_of(read).values())
    D2 = D if D <= HEAD_SIZE or per_frequency else HEAD_SIZE
    width = W * H2 * D2 / (H * D)  # the attention width keeps its fraction of the hidden size
    W2 = max(2, 2 * round(width / 2))
    F2 = max(1, round(F * W2 / W))
    L2, V2 = min(L, num_layers), min(V, vocab)
    out = copy.deepcopy(raw)
    out.update(num_hidden_layers=L2, hidden_size=W2, num_attention_heads=H2, intermediate_size=F2, vocab_size=V2)
    notes = [f"layers {L} -> {L2}"]
    if "num_key_value_heads" in raw or K2 != H2:
        out["num_key_value_heads"] = K2
    notes.append(f"attention heads {H} -> {H2}" + (f", key/value heads {K} -> {K2} ({per_group} per group, as published)"
                                                  if per_group > 1 else " (one key/value head each, as published)"))
    if raw.get("head_dim") is not None or D2 * H2 != W2:
        out["head_dim"] = D2
    notes.append(f"head size {D} -> {D2}")
    ratio = f"{H * D / W:g}" if width == W2 else f"{H * D / W:g} (here {H2 * D2 / W2:.3g}: rounded to a whole width)"
    notes.append(f"hidden {W} -> {W2} (heads x head size = {ratio} x hidden, as published)")
    notes.append(f"MLP {F} -> {F2} ({F / W:g} x hidden, as published)" if F2 * W == F * W2 else
                 f"MLP {F} -> {F2} ({F / W:g} x hidden published, {F2 / W2:.3g} here: rounded)")
    notes.append(f"vocabulary {V} -> {V2}")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = out.get(key)
        if isinstance(value, int) and value >= V2:
            out[key] = V2 - 1
            if key == "pad_token_id":
                notes.append(f"pad_token_id {value} -> {V2 - 1} (inside the vocabulary)")
    for difference in differences:
        notes += difference.shrink_hf(read, out, out["num_hidden_layers"], seq_length)
    notes[0] = f"layers {L} -> {out['num_hidden_layers']}"
    if out.pop("quantization_config", None) is not None:  # DeepSeek-V3's block-fp8: no weights of the file here
        notes.append("quantization_config left out (the shrunk model's weights are random, unquantized)")
    return Shrunk(out, out["num_hidden_layers"], W2, H2, V2, notes, _kept(read, reading(out), differences))


def _kept(published, shrunk, differences: Differences) -> list[str]:
    """The differences' config.json fields (their hf_fields) that transformers reads the same
    from the shrunk file as from the published one, said outright (the sizes apart: the report
    lists them as shrunk)."""
    kept = []
    for name in dict.fromkeys(name for d in differences for name in d.hf_fields):
        value = published.get(name)
        if value is None or name in SIZES or shrunk.get(name) != value:
            continue
        if isinstance(value, dict):
            kept.append(", ".join(f"{k} {v}" for k, v in sorted(value.items())))
        else:
            kept.append(f"{name} {value}")
    return kept


def describe_shrink(shrunk: Shrunk, path: str) -> list[str]:
    return [f"reference: transformers' class built from {path} as transformers reads it",
            "  shrunk: " + "; ".join(shrunk.shrunk),
            "  kept as published: " + "; ".join(shrunk.kept)]


def reference_from_file(raw: dict, hf_class: str, std: float, seed: int, attention: str):
    """transformers' model of the (shrunk) file, fp32, eval, weights std `std`, norms in [0.5, 1.5]."""
    from porter.hf_config import causal_lm_class
    from porter.verify.reference import randomize

    cls = causal_lm_class(raw, hf_class)
    transformers_logging = __import__("transformers").utils.logging
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        config = cls.config_class.from_dict(copy.deepcopy(raw))
    finally:
        transformers_logging.set_verbosity(level)
    from porter.verify.reference import reference_attention

    # sdpa where the class runs it; eager where it cannot (Gemma-2's softcap)
    config._attn_implementation = reference_attention(cls) if attention == "sdpa" else attention
    torch.manual_seed(seed)
    model = cls(config).float().eval()
    randomize(model, std, seed)
    return model


# -- the user's own weights ------------------------------------------------------------------------

BYTES = {"fp32": 4, "bf16": 2}
COPIES = 5  # the HF reference, the state dict read, porter's full copy, and the tree's model and loaded checkpoint


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable), or None when unknown."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def memory_needed(config: dict, hf_class: str, dtype: str) -> int:
    return COPIES * parameter_count(config, hf_class) * BYTES[dtype] + (1 << 30)


def check_memory(config: dict, hf_class: str, dtype: str, path: str) -> None:
    """Refuse weights that would not fit in this machine's memory, stating the bytes needed."""
    need = memory_needed(config, hf_class, dtype)
    free = available_memory()
    override = os.environ.get("PORTER_MEMORY_AVAILABLE")  # what a test (or a user who knows better) says
    if override:
        free = int(override)
    if free is not None and need > free:
        params = parameter_count(config, hf_class)
        raise PorterError(
            f"the model's weights would not fit in memory: {need:,} bytes needed, {free:,} available",
            file=path, construct=f"{COPIES} copies of {params:,} parameters in {dtype} ({BYTES[dtype]} bytes each) "
                                 "plus 1 GiB: the HF reference, the weights read, porter's copy, the tree's model "
                                 "and the checkpoint it loads",
            found=f"{free:,} bytes available",
            fix="run on a machine with more memory, or verify with a config as MODEL (a shrunk model of the same "
                "structure) without --hf",
        )
