"""LongRoPE (Phi-3.5, Phi-3-128k): a factor per rotary frequency, one list for sequences up to
the original context and one beyond it, and cos, sin scaled by an attention factor.

Spec: `position_embedding.rope_scaling.type = "longrope"` with `short_factor` and `long_factor`
(head_dim / 2 numbers each: frequency i turns `factor[i]` times slower), the
`original_max_position_embeddings` that picks between them (a sequence of more positions takes
the long list: transformers' `max(position_ids) + 1 > original`), the `factor` (how much
longer the context is than the original: Phi-3.5, 131072 / 4096 = 32) and the
`attention_factor` on cos and sin (unset: sqrt(1 + ln(factor) / ln(original)), 1 for a factor
of 1 or less). The tree's RotaryEmbedding holds both frequency sets and picks one per sequence
length (rotary_embedding.py: longrope_scaled).

HF: `rope_scaling` (transformers 4) or `rope_parameters` (5) with type `longrope`, or `su`, the
name older Phi-3 files use (Phi3Config also reads `yarn` as longrope). Read as transformers
reads it: a top-level `original_max_position_embeddings` (Phi-3 files have one) wins over the
scaling's own, and the config class's default counts as one (Phi3Config: 4096); a missing
`factor` is max_position_embeddings / original_max_position_embeddings.
"""

from __future__ import annotations

from typing import Any

from porter.differences.partial_rotary import sizes as partial
from porter.errors import PorterError
from porter.hf_reading import class_default, class_defines, hf_rotary_dim
from porter.schema import numbers

PREFIX = "position_embedding.rope_scaling."
TYPE = "longrope"
# rope type names transformers reads as longrope: everywhere, and in one config class only
ALIASES = {"su": TYPE}
CLASS_ALIASES = {"phi3": {"yarn": TYPE}}

FIELDS = {
    PREFIX + "short_factor": numbers(help="longrope: a factor per frequency up to the original context"),
    PREFIX + "long_factor": numbers(help="longrope: a factor per frequency beyond the original context"),
}
# spec field -> (switch, option, add_argument keywords, help); the switches a longrope spec adds (its
# attention factor's is yarn's: rope_scaling/__init__.py)
OPTIONS = {
    "short_factor": ("rope_scaling_short_factor", "--rope-scaling-short-factor", (("nargs", "'+'"), ("type", "float")),
                     "Rotary scaling (longrope): the factor of each frequency, head size / 2 numbers, for "
                     "sequences up to the original context."),
    "long_factor": ("rope_scaling_long_factor", "--rope-scaling-long-factor", (("nargs", "'+'"), ("type", "float")),
                    "Rotary scaling (longrope): the factor of each frequency for sequences longer than the "
                    "original context."),
}
# what a longrope spec hands the tree besides its own options (the shared ones of llama3)
SHARED = ("factor", "original_max_position_embeddings")


def kind_of(params: dict[str, Any], model_type: str | None) -> str:
    """The rope type as transformers reads it (`su`, and Phi-3's `yarn`, are longrope)."""
    kind = params.get("rope_type", "default")
    return CLASS_ALIASES.get(model_type or "", {}).get(kind) or ALIASES.get(kind, kind)


def original_context(config, params: dict[str, Any]) -> int | None:
    """original_max_position_embeddings as transformers' standardize_rope_params settles it: the
    config's own top-level field (or its class's default) first, then the scaling's, then
    max_position_embeddings."""
    model_type = config.get("model_type")
    for value in (config.get("original_max_position_embeddings"),
                  class_default(model_type, "original_max_position_embeddings"),
                  params.get("original_max_position_embeddings"), _max_positions(config)):
        if value is not None:
            return int(value)
    return None


def _max_positions(config) -> int | None:
    value = config.get("max_position_embeddings", class_default(config.get("model_type"), "max_position_embeddings"))
    return None if value is None else int(value)


def from_hf(config, params: dict[str, Any]) -> dict[str, Any]:
    """The spec fields of a longrope config."""
    missing = [k for k in ("short_factor", "long_factor") if not params.get(k)]
    if missing:
        raise PorterError(f"longrope rope scaling without {' and '.join(missing)}", file=config.path,
                          construct="rope_scaling.short_factor and rope_scaling.long_factor: head_dim / 2 numbers each",
                          found=f"rope_scaling = {params}", fix="fix the config (a Phi-3.5 config.json has both)")
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    dim = hf_rotary_dim(config, head_dim) if head_dim else None  # the channels that rotate (partial rotary)
    wrong = [k for k in ("short_factor", "long_factor") if dim and len(params[k]) != dim // 2]
    if wrong:
        size = f"head_dim / 2 = {dim // 2}" if dim == head_dim else \
            f"rotary_dim / 2 = int({head_dim} x partial_rotary_factor) / 2 = {dim // 2}"
        raise PorterError(f"longrope's {' and '.join(wrong)} do not fit the head size", file=config.path,
                          construct=f"rope_scaling.{wrong[0]}: {size} numbers, one per frequency",
                          found=", ".join(f"{k}: {len(params[k])} numbers" for k in wrong),
                          fix="fix the config (transformers' Phi3Config refuses it too)")
    original = original_context(config, params)
    if original is None:
        raise PorterError("longrope rope scaling without its original context", file=config.path,
                          construct="original_max_position_embeddings (top-level or in rope_scaling)",
                          found=str(params), fix="add original_max_position_embeddings to the config")
    factor = params.get("factor")
    if factor is None:  # transformers: the ratio of the context to the original one
        factor = _max_positions(config) / original
    out = {PREFIX + "type": TYPE, PREFIX + "short_factor": list(params["short_factor"]),
           PREFIX + "long_factor": list(params["long_factor"]),
           PREFIX + "original_max_position_embeddings": original, PREFIX + "factor": float(factor)}
    if params.get("attention_factor") is not None:
        out[PREFIX + "attention_factor"] = float(params["attention_factor"])
    return out


def to_hf(spec, config: dict[str, Any], params: dict[str, Any]) -> None:
    """rope_parameters of a longrope spec (its factor only where it is not transformers' implicit
    max_position_embeddings / original); the top-level original context too where the config
    class has one (Phi3Config's would otherwise override the scaling's own)."""
    for key in ("short_factor", "long_factor", "factor", "original_max_position_embeddings", "attention_factor"):
        if spec[PREFIX + key] is not None:
            params[key] = spec[PREFIX + key]
    positions, original = spec["sizes.max_position_embeddings"], spec[PREFIX + "original_max_position_embeddings"]
    if positions and original and params.get("factor") == positions / original:
        del params["factor"]  # the implicit one, as the published files leave it (transformers computes it)
    if class_defines(config.get("model_type"), "original_max_position_embeddings", unknown=False):
        config["original_max_position_embeddings"] = spec[PREFIX + "original_max_position_embeddings"]


def validate(values: dict[str, Any], fail) -> None:
    short, long = values[PREFIX + "short_factor"], values[PREFIX + "long_factor"]
    if short is None or long is None:
        raise fail(PREFIX + ("short_factor" if short is None else "long_factor"), "unset",
                   "give both factor lists, head_dim / 2 numbers each",
                   message="inconsistent spec: longrope rope scaling needs short_factor and long_factor")
    if len(short) != len(long):
        raise fail(PREFIX + "long_factor", f"{len(short)} short factors, {len(long)} long ones",
                   "give both lists head_dim / 2 numbers",
                   message="inconsistent spec: longrope's factor lists differ in length")
    head_dim = partial.head_dim_of(values)
    if head_dim is None:
        return
    dim = partial.rotary_dim(head_dim, values[partial.FIELD])  # the channels that rotate: a frequency per pair
    if len(short) != dim // 2:
        size = "head_dim" if dim == head_dim else f"rotary_dim = int({head_dim} x rotary_percent {values[partial.FIELD]:g})"
        raise fail(PREFIX + "short_factor", f"{len(short)} factors per list for a rotary dimension of {dim}",
                   f"give both lists {size} / 2 = {dim // 2} numbers, one per rotary frequency",
                   message="inconsistent spec: longrope's factor lists do not fit the rotary dimension")


def resized(factors: list[float], count: int) -> list[float]:
    """A factor list for a model of another head size: `count` factors taken evenly from it (the
    same list when it already has `count`), so a tiny model keeps the real list's shape."""
    return [factors[i * len(factors) // count] for i in range(count)]


def tiny(spec, head_dim: int) -> dict[str, Any]:
    """The factor lists at the tiny model's head size (its rotary dimension: partial rotary rotates
    fewer channels); the original context stays the spec's (the length a test sets decides which
    list a run proves)."""
    count = partial.rotary_dim(head_dim, spec[partial.FIELD]) // 2
    return {PREFIX + key: resized(spec[PREFIX + key], count) for key in ("short_factor", "long_factor")}

