"""The rotary dimension of a spec's head: int(head_dim x rotary_percent), as transformers sizes
it (modeling_rope_utils: `dim = int(head_dim * partial_rotary_factor)`)."""

from __future__ import annotations

from typing import Any

FIELD = "position_embedding.rotary_percent"
SWITCH = "rotary_percent"


def rotary_dim(head_dim: int, percent: float | None) -> int:
    """The channels of a head that rotate (the first ones)."""
    return int(head_dim * (1.0 if percent is None else percent))


def head_dim_of(values: Any) -> int | None:
    """A spec's head size (attention.head_dim, else hidden / heads), None when unsized."""
    head_dim = values["attention.head_dim"]
    if head_dim:
        return int(head_dim)
    hidden, heads = values["sizes.hidden_size"], values["sizes.num_attention_heads"]
    return hidden // heads if hidden and heads else None


def hf_partial(config: dict) -> Any:
    """An HF config's partial_rotary_factor as written (None: absent): rope_parameters' own wins
    over the top-level field, as transformers reads them (setdefault)."""
    from porter.hf_reading import rope_parameters_of

    return rope_parameters_of(config).get("partial_rotary_factor", config.get("partial_rotary_factor"))


def hf_rotary_dim(config: dict, head_dim: int) -> int:
    """The rotary dimension of an HF config (partial_rotary_factor in rope_parameters, or top-level)."""
    partial = hf_partial(config)
    return rotary_dim(head_dim, None if partial is None else float(partial))
