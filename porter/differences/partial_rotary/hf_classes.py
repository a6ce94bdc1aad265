"""The HF model types whose transformers modeling code rotates part of each head: its
apply_rotary_pos_emb rotates the first cos.shape[-1] channels and passes the rest on (data, from
transformers' modeling files). A class that rotates whole heads (LLaMA's) fails on a partial
rotary table, so porter refuses such a config rather than port a model transformers cannot run."""

from __future__ import annotations

TYPES = frozenset({"phi3"})


def rotates_part(model_type: str | None) -> bool:
    return model_type in TYPES
