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
