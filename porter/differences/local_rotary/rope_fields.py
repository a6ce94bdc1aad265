"""Gemma-3's two rotary bases in an HF config, as transformers spells them.

transformers 5: `rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}`, each
with its rope_theta (and the full one with the rope scaling); transformers 4 and the published
files: `rope_theta` and `rope_scaling` for the global layers, `rope_local_base_freq` for the
local ones. A file that says nothing gets the class's own defaults (Gemma3TextConfig:
`default_theta`, 1e6 global and 1e4 local).
"""

from __future__ import annotations

import functools

from porter.hf_config import GLOBAL_LAYERS as GLOBAL
from porter.hf_config import LOCAL_LAYERS as LOCAL


def local_theta(config) -> float | None:
    """The local layers' rotary base the config gives, or its class's default; None when the
    class has one base for every layer."""
    nested = (config.get("rope_parameters") or {}).get(LOCAL)
    if isinstance(nested, dict) and nested.get("rope_theta") is not None:
        return nested["rope_theta"]
    if config.get("rope_local_base_freq") is not None:
        return config["rope_local_base_freq"]
    if not per_layer_type(config.get("model_type")):
        return None
    return _class_default(config.get("model_type"))


def local_layer(config: dict, index: int) -> bool:
    """Is layer `index` (from 0) one under the sliding window: `layer_types`, or, in files without
    it, every layer but each `sliding_window_pattern`-th."""
    types = config.get("layer_types")
    if types:
        return types[index] == LOCAL
    pattern = config.get("sliding_window_pattern")
    return bool(pattern) and (index + 1) % pattern != 0


@functools.cache
def per_layer_type(model_type: str | None) -> bool:
    """Does the model type's config class give its local layers a rotary base of their own?"""
    if not model_type:
        return False
    try:
        from transformers import CONFIG_MAPPING

        made = CONFIG_MAPPING[model_type]()
    except (ImportError, KeyError):
        return False
    nested = getattr(made, "rope_parameters", None)
    return (isinstance(nested, dict) and LOCAL in nested) or hasattr(made, "rope_local_base_freq")


@functools.cache
def _class_default(model_type: str) -> float | None:
    from transformers import CONFIG_MAPPING

    made = CONFIG_MAPPING[model_type]()
    nested = getattr(made, "rope_parameters", None)
    if isinstance(nested, dict) and isinstance(nested.get(LOCAL), dict):
        return nested[LOCAL].get("rope_theta")
    return getattr(made, "rope_local_base_freq", None)


def nest(config: dict, local: float) -> None:
    """The config's one set of rope fields (`rope_parameters`: rope_theta, rope_type, scaling) becomes
    the global layers', beside the local layers' own base, unscaled."""
    flat = dict(config.get("rope_parameters") or {})
    if GLOBAL in flat:
        return
    config["rope_parameters"] = {GLOBAL: flat, LOCAL: {"rope_type": "default", "rope_theta": local}}
