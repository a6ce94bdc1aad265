"""A config.json read the way transformers reads it.

transformers builds a model from config.json through its model type's config class
(`CONFIG_MAPPING[model_type].from_dict(...)`, which is what `from_pretrained` does). A field
the file leaves out, or sets to null, becomes whatever the class makes of it: its default, or
one of its own rules (`num_key_value_heads: null` means one per query head; Qwen2 drops its
window when `use_sliding_window` is off; Gemma reads the legacy "gelu" as the tanh GELU).
porter reads through the installed class, so it ports what transformers builds. Without
transformers it reads through `hf_classes.json`, a table of the same classes that a test
keeps equal to the installed ones.

Whether a field matters is decided here too, from the class and its modeling code, not from
a list of names:
- a field of transformers' base config class (architectures, dtype, id2label...) is bookkeeping;
- a field the model's class defines matters when the family's modeling code reads it, except
  the few that code reads only outside the forward pass (OUTSIDE_FORWARD);
- a field the class does not define is kept by transformers as a plain attribute. It matters
  only if the modeling code reads it anyway. SmolLM2's `is_llama_config` and Qwen2.5's
  `use_mrope: false` change nothing.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from porter import multimodal as multimodal_models
from porter import transformers_config
from porter.class_table import class_table
from porter.errors import PorterError
from porter.multimodal import Multimodal

ROPE_FIELDS = ("rope_theta", "rope_scaling", "rope_parameters")
# the layer types of a model with a rotary per layer type (Gemma-3's nested rope_parameters)
GLOBAL_LAYERS, LOCAL_LAYERS = "full_attention", "sliding_attention"
# Rope types whose parameters carry the pre-training context (transformers fills it from
# max_position_embeddings when it is left out).
ROPE_WITH_ORIGINAL = ("llama3", "yarn", "longrope")

# Fields the modeling code reads for something other than the function it computes from its
# weights: the generation cache, dropout and the router's loss in training, the embedding's
# padding row (its gradient), the initialisation of fresh weights.
OUTSIDE_FORWARD = {
    "use_cache": "the generation cache",
    "pad_token_id": "the embedding's padding row (no gradient in training)",
    "attention_dropout": "dropout in training",
    "initializer_range": "the initialisation of new weights",
    "output_router_logits": "returning the router's logits for the training loss",
    # Phi-3 drops its generation cache once a prompt passes it; a longrope reads its own copy
    # (in rope_parameters), which porter ports
    "original_max_position_embeddings": "the generation cache's reset past the original context",
}
# Fields read outside the modeling code that change what the weights mean.
REFUSED_ANYWHERE = {
    "quantization_config": "quantized weights (porter converts and verifies unquantized weights, and "
                           "dequantizes block-fp8 ones as it reads them)",
}


def fp8_blocks(quant: Any) -> tuple[int, int] | None:
    """The blocks of a block-fp8 quantization_config (DeepSeek-V3's; transformers'
    FineGrainedFP8Config writes it too), which porter dequantizes to bf16 as it reads the
    weights (porter/convert/fp8.py); None for any other quantization."""
    if not isinstance(quant, dict) or quant.get("quant_method") != "fp8" or quant.get("fmt", "e4m3") != "e4m3":
        return None
    block = quant.get("weight_block_size")
    if isinstance(block, (list, tuple)) and len(block) == 2:
        return int(block[0]), int(block[1])
    return None


def refused_anywhere(name: str, value: Any) -> bool:
    """Does this field of config.json change what the weights mean in a way porter cannot read?"""
    if name not in REFUSED_ANYWHERE or value is None:
        return False
    return not (name == "quantization_config" and fp8_blocks(value))


@dataclass(frozen=True)
class ConfigClass:
    """A transformers config class, as porter needs it."""

    model_type: str
    name: str  # e.g. LlamaConfig
    defaults: dict  # each field the class defines -> its declared default
    reads: frozenset  # the names the family's modeling code reads from its config
    default_theta: float  # the rotary base when the file gives none
    origin: str  # "transformers 5.25.0", or the table's
    legacy: dict  # field -> {legacy value: what the class reads it as}
    base: frozenset  # the base config class's fields (bookkeeping)
    window_switch: bool = False  # the class drops its window unless use_sliding_window (Qwen2)
    # the class's other names of a field (its attribute_map: Qwen3-MoE's num_experts is kept as
    # num_local_experts, DeepSeek-V3's num_mtp_layers as num_nextn_predict_layers)
    aliases: dict = field(default_factory=dict)

    def defines(self, name: str) -> bool:
        return name in self.defaults or name in ROPE_FIELDS or name in self.aliases or name in self.aliases.values()


class HFConfig(dict):
    """A config.json as transformers reads it: every field of the config class, defaults filled
    in and the class's own rules applied, the rotary fields as `rope_parameters`; the file itself
    is `raw`. Without a config class (a family porter does not port) it holds the file as written."""

    def __init__(self, data: dict, path: str = "config.json", raw: dict | None = None,
                 cls: ConfigClass | None = None, multimodal: Multimodal | None = None) -> None:
        super().__init__(data)
        self.path = path
        self.raw = copy.deepcopy(data if raw is None else raw)
        self.cls = cls
        # the multimodal model whose language model this is (raw: its text_config, filled in)
        self.multimodal = multimodal

    @property
    def model_type(self) -> str | None:
        value = self.raw.get("model_type")
        return value if isinstance(value, str) else None

    def defines(self, name: str) -> bool:
        """Does the config class define the field? (True where no class is known.)"""
        return True if self.cls is None else self.cls.defines(name)

    def carries(self, name: str) -> bool:
        """Does the model read the field: the class defines it, or its modeling code reads it
        anyway (Qwen3-MoE's head_dim: no field of Qwen3MoeConfig, read with getattr)?"""
        return self.defines(name) or name in self.cls.reads

    def rope_parameters(self) -> dict[str, Any]:
        """rope_theta, rope_type and the scaling fields, from `rope_parameters` (transformers 5)
        or `rope_theta` + `rope_scaling` (transformers 4)."""
        return rope_parameters_of(self)


def rope_parameters_of(fields: dict) -> dict[str, Any]:
    """The rope fields in transformers 5's standard form; a model with a rotary per layer type
    (Gemma-3: `rope_parameters.full_attention` and `.sliding_attention`) gives its global layers'
    (the local ones' base is porter.differences.local_rotary's)."""
    params = dict(fields.get("rope_parameters") or {})
    if isinstance(params.get(GLOBAL_LAYERS), dict):
        params = dict(params[GLOBAL_LAYERS])
    if fields.get("rope_theta") is not None and "rope_theta" not in params:
        params["rope_theta"] = fields["rope_theta"]
    for key, value in (fields.get("rope_scaling") or {}).items():
        params.setdefault("rope_type" if key == "type" else key, value)
    kind = params.pop("type", None)
    params.setdefault("rope_type", kind or "default")
    return params


def hf_partial(config: dict) -> Any:
    """An HF config's partial_rotary_factor as written (None: absent): rope_parameters' own wins
    over the top-level field, as transformers reads them (setdefault)."""
    return rope_parameters_of(config).get("partial_rotary_factor", config.get("partial_rotary_factor"))


def hf_rotary_dim(config: dict, head_dim: int) -> int:
    """The channels of a head that rotate, as transformers sizes them (modeling_rope_utils:
    `dim = int(head_dim * partial_rotary_factor)`; all of them without the factor)."""
    partial = hf_partial(config)
    return int(head_dim * (1.0 if partial is None else float(partial)))


# -- the config classes ---------------------------------------------------------------------------


def _transformers():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


@functools.cache
def _installed(model_type: str) -> ConfigClass | None:
    transformers = _transformers()
    if transformers is None:
        return None
    try:
        cls = transformers.CONFIG_MAPPING[model_type]
    except KeyError:
        return None
    base = _base_fields(transformers)
    defaults = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in base:
            continue
        defaults[name] = None if param.default is inspect.Parameter.empty else param.default
    return ConfigClass(
        model_type=model_type, name=cls.__name__, defaults=_plain(defaults), reads=frozenset(_modeling_reads(model_type)),
        default_theta=_global_theta(getattr(cls, "default_theta", 10000.0)), origin=f"transformers {transformers.__version__}",
        legacy={}, base=frozenset(base),
        window_switch="use_sliding_window" in defaults, aliases=_plain(dict(getattr(cls, "attribute_map", {}) or {})),
    )


def _global_theta(value) -> float:
    """A class's default rotary base; of a rotary per layer type (Gemma3TextConfig: {"global": 1e6,
    "local": 1e4}), the global layers'."""
    if isinstance(value, dict):
        value = value.get("global", value.get(GLOBAL_LAYERS, 10000.0))
    return float(value)


def _base_fields(transformers) -> set[str]:
    base = transformers.PretrainedConfig
    names = {n for n in inspect.signature(base.__init__).parameters if n != "self"}
    return names | set(base().to_dict()) | {"torch_dtype", "_name_or_path", "transformers_version", "model_type"}


def _plain(value):
    """JSON-able: what the table can hold."""
    return json.loads(json.dumps(value, default=lambda v: None))


def _modeling_reads(model_type: str) -> set[str]:
    """The names the family's modeling module reads from its config (`config.x`,
    `getattr(config, "x", ...)`)."""
    import importlib

    try:  # the config class's package holds the modeling code (gemma3_text's is models/gemma3/)
        config_module = _transformers().CONFIG_MAPPING[model_type].__module__
        module = importlib.import_module(config_module.replace(".configuration_", ".modeling_"))
        source = inspect.getsource(module)
    except (ImportError, OSError, KeyError):
        return set()
    return set(re.findall(r"config\.(\w+)", source)) | set(
        re.findall(r"getattr\(\s*(?:self\.)?config\s*,\s*[\"'](\w+)[\"']", source))


def _from_table(model_type: str) -> ConfigClass | None:
    table = class_table()
    entry = table["classes"].get(model_type)
    if entry is None:
        return None
    return ConfigClass(
        model_type=model_type, name=entry["class"], defaults=dict(entry["defaults"]), reads=frozenset(entry["reads"]),
        default_theta=float(entry["default_theta"]), origin=f"porter's table of transformers {table['transformers']}",
        legacy=entry.get("legacy", {}), base=frozenset(table["base"]), window_switch="use_sliding_window" in entry["defaults"],
        aliases=dict(entry.get("aliases", {})),
    )


def config_class(model_type: str | None) -> ConfigClass | None:
    """The config class of a model type: the installed transformers', else porter's table."""
    if not model_type:
        return None
    return _installed(model_type) or _from_table(model_type)


def causal_lm_of(transformers, model_type: str) -> str:
    """The causal-LM class name of a model type (LlamaForCausalLM for llama)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]


def model_type_of_class(hf_class: str) -> str | None:
    """The model_type of a transformers causal-LM class name, through the installed transformers
    or, without it, the table."""
    transformers = _transformers()
    if transformers is not None:
        found = getattr(transformers, hf_class, None)
        return found.config_class.model_type if found is not None else None
    return next((t for t, e in class_table()["classes"].items() if e.get("causal_lm") == hf_class), None)


def table_entry(cls: ConfigClass) -> dict:
    """The table's entry for a config class (`python -m porter.hf_table` writes them)."""
    entry = {"class": cls.name, "defaults": cls.defaults, "reads": sorted(cls.reads), "default_theta": cls.default_theta}
    if cls.legacy:
        entry["legacy"] = cls.legacy
    if cls.aliases:
        entry["aliases"] = cls.aliases
    return entry


# -- reading --------------------------------------------------------------------------------------


def read_config(path: str | Path) -> HFConfig:
    """config.json (or the folder holding it), read as transformers reads it; errors name the file.
    A multimodal model's is its language model's (porter/multimodal.py)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PorterError(f"cannot read {path}", file=str(path), construct="an HF config.json",
                          found=str(exc), fix="pass an HF model folder or its config.json") from exc
    except json.JSONDecodeError as exc:
        raise PorterError(f"malformed config.json: {exc.msg}", file=str(path), construct="JSON",
                          found=f"line {exc.lineno} column {exc.colno}",
                          fix="fix the JSON at the position given (or download the file again)") from exc
    if not isinstance(data, dict):
        raise PorterError("config.json is not a JSON object", file=str(path), construct="{...}",
                          found=type(data).__name__, fix="pass an HF model's config.json")
    return reading_file(data, str(path))


def reading_file(data: dict, path: str) -> HFConfig:
    """A config.json's fields as transformers reads them; of a multimodal model, its language
    model's (porter/multimodal.py), the model it is part of said in `multimodal`."""
    found = multimodal_models.of(data)
    if found is None:
        return reading(data, path)
    read = reading(multimodal_models.text_config(data, found, path), path)
    read.multimodal = found
    return read


def reading(raw: dict, path: str = "config.json") -> HFConfig:
    """A config dict as transformers reads it (the installed class, or porter's table of it)."""
    model_type = raw.get("model_type")
    cls = config_class(model_type if isinstance(model_type, str) else None)
    if cls is None:
        return HFConfig(raw, path, raw)
    if _installed(cls.model_type) is not None:
        fields = _through_transformers(raw, path)
    else:
        fields = _through_table(raw, cls)
    rope = _standard_rope(fields, cls)
    local = (fields.get("rope_parameters") or {}).get(LOCAL_LAYERS)
    if isinstance(local, dict):  # a rotary per layer type: the local layers' own, beside the global
        rope = {GLOBAL_LAYERS: rope, LOCAL_LAYERS: dict(local)}
    # the class's fields, and those its modeling code reads anyway: the rest change nothing
    fields = {k: v for k, v in _both_names(fields, raw, cls).items() if cls.defines(k) or k in cls.base or k in cls.reads}
    fields["rope_parameters"] = rope
    return HFConfig(fields, path, raw, cls)


def as_read(config: dict) -> HFConfig:
    """A config as transformers reads it: an HFConfig read so already as it is, else read now
    (a dict porter wrote, a file's fields as they are)."""
    if isinstance(config, HFConfig) and (config.cls is not None or config_class(config.model_type) is None):
        return config
    raw = config.raw if isinstance(config, HFConfig) else config
    read = _reading_of(json.dumps(raw, sort_keys=True, default=str), getattr(config, "path", "config.json"))
    return HFConfig(dict(read), read.path, read.raw, read.cls)


@functools.lru_cache(maxsize=64)
def _reading_of(text: str, path: str) -> HFConfig:
    return reading(json.loads(text), path)


def raw_of(config: dict) -> dict:
    """The file's own fields (those transformers' class leaves out included)."""
    return config.raw if isinstance(config, HFConfig) else config


def _through_transformers(raw: dict, path: str) -> dict:
    cls = _transformers().CONFIG_MAPPING[raw["model_type"]]
    return transformers_config.from_dict(cls, raw, path).to_dict()


def _both_names(fields: dict, raw: dict, cls: ConfigClass) -> dict:
    """Each aliased field under both of the class's names (the modeling code reads either): the
    file's value under either name, else the class's."""
    out = dict(fields)
    for alias, stored in cls.aliases.items():
        given = next((raw[n] for n in (alias, stored) if raw.get(n) is not None), None)
        value = given if given is not None else fields.get(stored) if fields.get(stored) is not None else fields.get(alias)
        out[alias] = out[stored] = value
    return out


def _through_table(raw: dict, cls: ConfigClass) -> dict:
    """What the installed class would make of the file, by its table (kept equal by a test)."""
    fields = {**cls.defaults, **raw}
    for name, values in cls.legacy.items():
        if isinstance(fields.get(name), str) and fields[name] in values:
            fields[name] = values[fields[name]]
    if fields.get("num_key_value_heads") is None and "num_key_value_heads" in cls.defaults:
        fields["num_key_value_heads"] = fields.get("num_attention_heads")
    if cls.window_switch:
        if not fields.get("use_sliding_window"):
            fields["sliding_window"] = None
        if fields.get("layer_types") is None:
            start = fields.get("max_window_layers") or 0
            fields["layer_types"] = ["sliding_attention" if fields["sliding_window"] is not None and i >= start
                                     else "full_attention" for i in range(fields.get("num_hidden_layers") or 0)]
    return fields


def _standard_rope(fields: dict, cls: ConfigClass) -> dict:
    """transformers' standard form: rope_type, rope_theta (the class's default base when the file
    has none), partial_rotary_factor where the file has one, and the scaling numbers, the
    pre-training context filled in where a type has one."""
    params = rope_parameters_of(fields)
    if params.get("rope_theta") is None:
        params["rope_theta"] = cls.default_theta
    if fields.get("partial_rotary_factor") is not None:  # a top-level one joins them (rope_parameters' own wins)
        params.setdefault("partial_rotary_factor", fields["partial_rotary_factor"])
    if params["rope_type"] in ROPE_WITH_ORIGINAL:
        params.setdefault("original_max_position_embeddings", fields.get("max_position_embeddings"))
    return params


# -- what a field means ---------------------------------------------------------------------------


def field_kind(config: HFConfig, name: str) -> str:
    """How a config.json field bears on the model: 'bookkeeping', 'outside' (read outside the
    forward pass), 'model' (the modeling code reads it), 'ignored' (the class neither defines
    nor reads it), or 'refused' (REFUSED_ANYWHERE)."""
    cls = config.cls
    if name in REFUSED_ANYWHERE:
        return "refused"
    if cls is None:
        return "model"
    if name in cls.base:
        return "bookkeeping"
    if name in OUTSIDE_FORWARD:
        return "outside"
    if cls.defines(name) or name in cls.reads:
        return "model"
    return "ignored"


def class_defines(model_type: str | None, name: str, unknown: bool = True) -> bool:
    """Does the transformers config class of `model_type` define the field `name`? LlamaConfig
    defines attention_bias; Qwen2Config does not (Qwen2's modeling code hard-codes its q, k, v
    biases), so there the family spec, not config.json, says where the biases are. An unknown
    model type answers `unknown`."""
    cls = config_class(model_type)
    return unknown if cls is None else cls.defines(name)


def class_default(model_type: str | None, name: str) -> Any:
    """The value the transformers config class of `model_type` gives the field `name` when
    config.json leaves it out (Phi3Config: original_max_position_embeddings 4096); None where
    the class has no such field, or is unknown."""
    cls = config_class(model_type)
    return None if cls is None else cls.defaults.get(name)
