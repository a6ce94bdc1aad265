"""A multimodal checkpoint's language model: what porter ports of it, the rest left out.

Gemma-3 4B, 12B and 27B (and Mistral-Small-3.1, Mistral3) are published as one
`*ForConditionalGeneration` model: config.json's `model_type` is the multimodal one (gemma3),
the language model's config sits under `text_config` (most of its fields left out: what the
text config class makes of them when transformers reads the outer file), beside a
`vision_config`. porter ports the language model, by structure, not by name: a config.json
whose `architectures` names a `*ForConditionalGeneration` and whose config class has a
`text_config` is read as that text config, filled in as transformers fills it, with the family
of the text config's model_type (gemma3_text: the gemma3 spec). A model trained on the port
loads back into the text model's own class (Gemma3ForCausalLM, model_type gemma3_text).

Weights: the language model's tensors under either naming, read as the text class's own
(`model.*`, `lm_head.*`): the published one (transformers 4, and what transformers 5's
save_pretrained writes), `language_model.model.*` and `language_model.lm_head.*`, and
transformers 5's module names, `model.language_model.*` and a top-level `lm_head.*`. Every
other tensor (the vision tower, the projector) is left out, never read, and named in the report.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from porter import transformers_config
from porter.class_table import class_table
from porter.errors import PorterError

TEXT_CONFIG = "text_config"
TIE = "tie_word_embeddings"
GENERATION = "ForConditionalGeneration"
# the language model's tensors, as each naming spells them -> the text class's own name
_TEXT_NAMES = (
    (re.compile(r"language_model\.lm_head\.(.+)"), r"lm_head.\1"),
    (re.compile(r"language_model\.model\.(.+)"), r"model.\1"),
    (re.compile(r"model\.language_model\.(.+)"), r"model.\1"),
    (re.compile(r"lm_head\.(.+)"), r"lm_head.\1"),
)
# fields of the outer file a text-only checkpoint keeps (its weights' dtype)
_KEPT = ("torch_dtype", "dtype")


@dataclass(frozen=True)
class Multimodal:
    """The multimodal model whose language model porter ports."""

    model_type: str  # the outer one: gemma3
    architecture: str  # Gemma3ForConditionalGeneration
    text_model_type: str | None  # gemma3_text
    left_out: tuple[str, ...]  # the other sub-configs: vision_config

    def describe(self) -> str:
        parts = "".join(f"{name}'s encoder, " for name in self.left_out)
        return (f"the language model (text_config, model_type {self.text_model_type}) of {self.architecture} "
                f"(model_type {self.model_type}); the rest ({parts}the projector) left out: porter ports the "
                "language model, and a model trained on it loads back into the text model's own class")


def of(raw: dict) -> Multimodal | None:
    """The multimodal model a config.json describes, or None: its architectures name a
    *ForConditionalGeneration and its config class (else the file) has a text_config."""
    architecture = next((a for a in raw.get("architectures") or () if isinstance(a, str) and a.endswith(GENERATION)),
                        None)
    model_type = raw.get("model_type")
    if architecture is None or not isinstance(model_type, str):
        return None
    sub_configs = _sub_configs(model_type)
    if TEXT_CONFIG not in sub_configs and not isinstance(raw.get(TEXT_CONFIG), dict):
        return None
    text = raw.get(TEXT_CONFIG) if isinstance(raw.get(TEXT_CONFIG), dict) else {}
    # the outer class's own text class reads it whatever the file says (Gemma3TextConfig); a class
    # that reads any (AutoConfig: Mistral3) goes by the file's model_type
    text_type = getattr(sub_configs.get(TEXT_CONFIG), "model_type", None) or text.get("model_type") or None
    others = sorted({k for k in sub_configs if k != TEXT_CONFIG} |
                    {k for k, v in raw.items() if k.endswith("_config") and k != TEXT_CONFIG and isinstance(v, dict)})
    return Multimodal(model_type, architecture, text_type, tuple(others))


def _outer_class(model_type: str):
    try:
        import transformers
    except ImportError:
        return None
    try:
        return transformers.CONFIG_MAPPING[model_type]
    except KeyError:
        return None


def _sub_configs(model_type: str) -> dict:
    cls = _outer_class(model_type)
    return dict(getattr(cls, "sub_configs", None) or {}) if cls is not None else {}


def text_config(raw: dict, found: Multimodal, path: str) -> dict:
    """The language model's config.json, as a text-only checkpoint of it would hold it: the
    outer file's text_config as transformers reads the outer file (the outer config class fills
    it in), the fields that differ from the text class's defaults; its causal-LM class as
    `architectures`. The head is tied as the whole model ties it: by the outer class's
    tie_word_embeddings where it has one (transformers ties a model's weights by its own config's
    field, and the language model sits inside the whole one). Without the outer class installed, the file's text_config as it is (the
    text class fills in the rest when porter reads it)."""
    cls = _outer_class(found.model_type)
    if cls is not None:
        outer = transformers_config.from_dict(cls, raw, path)
        text = getattr(outer, TEXT_CONFIG, None)
        fields = text.to_diff_dict() if text is not None else {}
        fields.pop("transformers_version", None)
        tied = getattr(outer, TIE, None)
        if isinstance(tied, bool) and text is not None and tied != getattr(text, TIE, tied):
            fields[TIE] = tied  # the whole model ties its head by the outer field (Mistral3: True over the text's False)
    else:
        fields = copy.deepcopy(raw.get(TEXT_CONFIG) or {})
    if found.text_model_type and not fields.get("model_type"):
        fields["model_type"] = found.text_model_type
    causal = _causal_lm(fields.get("model_type"))
    if causal:
        fields["architectures"] = [causal]
    for key in _KEPT:
        if key in raw and key not in fields:
            fields[key] = raw[key]
    return fields


def _causal_lm(model_type: str | None) -> str | None:
    if not model_type:
        return None
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return (class_table()["classes"].get(model_type) or {}).get("causal_lm")
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)


def text_name(name: str) -> str | None:
    """The text class's name of a stored tensor of the language model, or None (the vision
    tower's, the projector's)."""
    for pattern, replacement in _TEXT_NAMES:
        if pattern.fullmatch(name):
            return pattern.sub(replacement, name)
    return None


@dataclass(frozen=True)
class Split:
    """A multimodal checkpoint's tensors: the language model's (text class's name -> stored
    name), and what is left out (top-level part -> tensors)."""

    text: dict[str, str]
    left_out: dict[str, int]


def split(names: Iterable[str], found: Multimodal, path: str) -> Split:
    """The language model's tensors among a multimodal checkpoint's; refused when there are none
    (or a name twice, under both namings)."""
    text: dict[str, str] = {}
    left_out: Counter = Counter()
    for name in names:
        mine = text_name(name)
        if mine is None:
            left_out[_part(name)] += 1
            continue
        if mine in text:
            raise PorterError(f"{path} holds the language model's {mine} twice", file=path,
                              construct="one naming of the language model's tensors",
                              found=f"{text[mine]} and {name}",
                              fix="keep one copy of the weights (save the model again with save_pretrained)")
        text[mine] = name
    if not any(name.startswith("model.") for name in text):
        raise PorterError(f"{path} holds no tensor of {found.architecture}'s language model", file=path,
                          construct="the language model's tensors: language_model.model.* (as published) or "
                                    "model.language_model.* (transformers 5's names)",
                          found=", ".join(f"{p}.* ({c})" for p, c in sorted(left_out.items())) or "no tensors",
                          fix="pass the folder of the whole checkpoint (every shard its index names)")
    return Split(text, dict(sorted(left_out.items())))


def _part(name: str) -> str:
    """A left-out tensor's part: vision_tower, multi_modal_projector (model.vision_tower...)."""
    pieces = name.split(".")
    return ".".join(pieces[:2]) if pieces[0] == "model" and len(pieces) > 1 else pieces[0]
