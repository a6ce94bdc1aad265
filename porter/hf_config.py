"""An HF config.json as a MODEL: the spec it describes, and the config.json a spec describes.

HF -> spec: the file is read as transformers reads it (porter/hf_reading.py: the installed
config class, defaults and the class's own rules included). The family is the bundled spec
of the file's `model_type` (model_diffs/<model_type>.toml); it gives only what transformers'
modeling code fixes and no config field says (RMSNorm, the gate's activation wiring, where
Qwen2's biases sit, the norm offset, the tokenizer kind when no tokenizer file is beside the
config). Every number comes from the reading, a field left out included: Meta-Llama-3-8B's
`"rope_scaling": null` is no scaling, whatever the family's spec has. A field the modeling code
reads that porter does not port, with a value other than the class's default, is refused by
name; a field the class neither defines nor reads changes nothing and is accepted. A family
porter does not port is refused with what it lacks and the closest family porter has.

spec -> HF: every difference the spec wants writes its fields (`to_hf`); `porter spec --as hf`
prints that with the user's own fields that porter does not model, to diff against the file.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from porter.errors import PorterError
from porter.hf_reading import (
    GLOBAL_LAYERS,
    LOCAL_LAYERS,
    OUTSIDE_FORWARD,
    REFUSED_ANYWHERE,
    ROPE_FIELDS,
    HFConfig,
    class_default,
    class_defines,
    config_class,
    read_config,
    reading,
    refused_anywhere,
    rope_parameters_of,
)
from porter.spec import Differences, Spec, schema_of

__all__ = ["GLOBAL_LAYERS", "LOCAL_LAYERS", "HFConfig", "family_of", "hf_class_of", "hf_config_of", "hf_file_of",
           "read_config",
           "spec_from_hf", "spec_values_from_hf"]

# name -> Spec of every bundled spec with a reference class (porter.catalog.bundled_families)
Families = Callable[[], Mapping[str, Spec]]

UNPORTED = Path(__file__).with_name("unported_families.toml")
# config.json fields that are numbers of training, not of the model: the entry point's defaults
TRAINING_FIELDS = {"initializer_range": "init_method_std", "attention_dropout": "attention_dropout"}
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def hf_class_of(name: str):
    """The HF model class a spec names: a transformers class (LlamaForCausalLM), or one of your
    own as "package.module:Class" (a model transformers does not have). Raises ImportError or
    AttributeError when it is not there."""
    import importlib

    if ":" in name:
        module, _, cls = name.partition(":")
        return getattr(importlib.import_module(module), cls)
    import transformers

    return getattr(transformers, name)


def causal_lm_class(raw: Mapping, hf_class: str):
    """transformers' class of a config.json: the causal LM its `architectures` names, where
    transformers has it, else the family's `hf_class`."""
    import transformers

    for name in raw.get("architectures") or ():
        if name.endswith("ForCausalLM") and hasattr(transformers, name):
            return getattr(transformers, name)
    return hf_class_of(hf_class)


def model_type_of(hf_class: str) -> str | None:
    """The model_type of an HF class name (LlamaForCausalLM -> llama): through the installed
    transformers (or the class's own module), else porter's table of transformers' classes."""
    from porter.hf_reading import model_type_of_class

    if ":" in hf_class:
        try:
            return hf_class_of(hf_class).config_class.model_type
        except (ImportError, AttributeError):
            return None
    return model_type_of_class(hf_class)


def porter_reads(differences: Differences) -> set[str]:
    """The config.json fields the differences read."""
    return {name for d in differences for name in d.hf_fields} | set(ROPE_FIELDS) | set(TRAINING_FIELDS)


# -- the family -----------------------------------------------------------------------------------


def family_of(config: HFConfig, families: Families) -> Spec:
    """The bundled spec whose reference class has the config's model_type (of several, the one
    named so, else the first); a family porter does not port is refused. A spec's name alone
    never decides: the gemma3 spec ports Gemma3ForCausalLM (model_type gemma3_text), and a
    multimodal gemma3 file is read as its language model's (porter/multimodal.py)."""
    model_type = config.model_type
    known = families()
    matching = [name for name, spec in known.items() if model_type_of(spec.hf_class) == model_type]
    if not matching:
        raise unported(config, known)
    return known[model_type if model_type in matching else matching[0]]


@functools.cache
def _unported_table() -> dict:
    return tomllib.loads(UNPORTED.read_text(encoding="utf-8"))


def unported(config: HFConfig, families: Mapping[str, Spec]) -> PorterError:
    """The refusal of a family porter does not port: what it has that porter lacks, and the
    bundled family closest to it. Of a multimodal model, its language model's family (the table's
    entry for the text model_type, else for the multimodal one)."""
    model_type = config.model_type
    arch = config.raw.get("architectures")
    outer = getattr(config, "multimodal", None)
    of = ""
    if outer is not None:
        of = f", the language model (text_config) of this {outer.architecture}"
        arch = [outer.architecture]
    table = _unported_table()
    entry = table.get(model_type or "") or (table.get(outer.model_type) if outer is not None else None)
    ported = "a model_type porter ports (" + ", ".join(_ported_types(families)) + ")"
    if outer is not None:
        ported = "a language model (text_config) of " + ported.removeprefix("a ")
    if entry is not None:
        return PorterError(
            f"porter does not port {entry['name']} (model_type {model_type!r}{of}): it has what no bundled family has",
            file=config.path, construct=ported,
            found="; ".join(entry["lacks"]),
            fix=f"the closest family porter has is {entry['closest']} ({entry['why']}): port this model by hand "
                f"from `porter spec {entry['closest']}`, or report the family",
        )
    closest, shared = _closest_by_fields(config, families)
    return PorterError(
        f"porter has no family for HF model_type {model_type!r}{of}",
        file=config.path, construct=ported,
        found=f"model_type = {model_type!r}, architectures = {arch!r}",
        fix=(f"the closest family porter has is {closest} (its config class shares {shared} of this file's fields); "
             f"port this model by hand from `porter spec {closest}`, or report the family") if closest else
            "port one of porter's families (`porter list`), or write a spec (docs/writing-a-spec.md)",
    )


def _ported_types(families: Mapping[str, Spec]) -> list[str]:
    return sorted(families)


def _closest_by_fields(config: HFConfig, families: Mapping[str, Spec]) -> tuple[str | None, int]:
    """The bundled family whose config class shares the most fields with the file; of those
    sharing as many, the one whose class has the fewest fields the file lacks (LLaMA's, not
    DeepSeek's, which has LLaMA's fields and its experts' and latent attention's besides)."""
    keys = set(config.raw)
    best, count, extra = None, 0, 0
    for model_type in _ported_types(families):
        cls = config_class(model_type)
        if cls is None:
            continue
        fields = set(cls.defaults) | set(ROPE_FIELDS)
        shared, lacking = len(keys & fields), len(fields - keys)
        if shared > count or (shared == count and shared and lacking < extra):
            best, count, extra = model_type, shared, lacking
    return best, count


# -- which fields matter --------------------------------------------------------------------------


@functools.cache
def _default_reading(model_type: str) -> HFConfig:
    return reading({"model_type": model_type}, f"{model_type} defaults")


def check_fields(config: HFConfig, differences: Differences) -> None:
    """Refuse what porter would otherwise ignore: a field transformers' modeling code reads that
    porter does not port, set to something other than what the class makes of a file without it."""
    cls = config.cls
    for name in config.raw:
        if refused_anywhere(name, config.raw[name]):
            raise PorterError(
                f"config.json has {name}: {REFUSED_ANYWHERE[name]}", file=config.path, construct=name,
                found=f"{name} = {_short(config.raw[name])}",
                fix="convert the unquantized checkpoint (its config.json has no quantization_config)",
            )
    reads = porter_reads(differences)
    defaults = _default_reading(cls.model_type)
    problems = []
    for name in sorted(cls.reads):
        if name.startswith("_") or name in reads or name in OUTSIDE_FORWARD or name in cls.base:
            continue
        if name in config.raw or name in config:
            value = config.get(name, config.raw.get(name))
            default = defaults[name] if name in defaults else cls.defaults.get(name)
            if value != default:
                problems.append(f"{name} = {_short(config.raw.get(name, value))} ({cls.name}'s default: "
                                f"{_short(default)})")
    if problems:
        raise PorterError(
            f"config.json sets fields porter cannot port: {', '.join(p.split(' = ')[0] for p in problems)}",
            file=config.path, construct=f"the fields {cls.name}'s modeling code reads ({cls.origin})",
            found="; ".join(problems),
            fix="porter refuses what it would otherwise ignore; port this model by hand, or report the field",
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def ignored_fields(config: HFConfig) -> list[str]:
    """The file's fields transformers' class for it neither defines nor reads (they change nothing)."""
    cls = config.cls
    if cls is None:
        return []
    return sorted(k for k in config.raw if k not in cls.base and not cls.defines(k) and k not in cls.reads
                  and k not in REFUSED_ANYWHERE)


# -- HF -> spec -----------------------------------------------------------------------------------


def spec_values_from_hf(config: HFConfig, differences: Differences) -> dict[str, Any]:
    """Every spec field the config's class carries, read by the differences; values porter cannot
    port refused by field."""
    if not isinstance(config, HFConfig) or config.cls is None and config.model_type:
        config = reading(dict(config), getattr(config, "path", "config.json"))
    values: dict[str, Any] = {}
    for difference in differences:
        values.update(difference.from_hf(config))
    return values


def _name_from(path: Path, model_type: str) -> str:
    folder = path.parent if path.name == "config.json" else path
    name = re.sub(r"[^0-9a-zA-Z]+", "_", folder.resolve().name).strip("_").lower()
    if not name or not name[0].isalpha():
        name = f"{model_type}_{name}".strip("_")
    return name


def spec_from_hf(path: str | Path, differences: Differences, families: Families) -> Spec:
    """The spec an HF config.json (or a model folder holding one) describes, read with the
    differences; `families()`: the bundled specs with a reference class, by name."""
    return spec_from_config(read_config(path), differences, families, Path(path))


def spec_from_config(config: HFConfig, differences: Differences, families: Families, path: Path | None = None) -> Spec:
    """The spec of a config.json already read (`path`: where it came from, for the spec's name)."""
    family = family_of(config, families)
    check_fields(config, differences)
    read = spec_values_from_hf(config, differences)
    schema = schema_of(differences)
    values = dict(family.values)
    for key, value in read.items():
        try:
            values[key] = schema[key].check(value)
        except ValueError as exc:
            raise PorterError(f"config.json sets {key} to a value porter cannot port", file=config.path,
                              construct=key, found=repr(value), fix=f"porter ports {exc}") from None
    set_here = {k for k, v in read.items() if v != schema[k].base}
    for difference in differences:
        difference.validate(values, set_here, lambda f, found, fix, message=None: PorterError(
            message or f"config.json: {f} cannot be {found!r}", file=config.path, construct=f, found=str(found), fix=fix))
    name = _name_from(path or Path(config.path), config.model_type)
    prefix = "".join(part.capitalize() for part in name.split("_"))
    training = dict(family.training_defaults)
    for hf, dest in TRAINING_FIELDS.items():
        if config.get(hf) is not None and (config.cls is None or config.cls.defines(hf)):
            training[dest] = config[hf]
    return Spec(
        name=name, class_prefix=prefix, script=f"pretrain_{name}.py",
        description=f"{family.description.split(':')[0]} from {config.path} (family: {family.name})" +
                    (f": {config.multimodal.describe()}" if getattr(config, "multimodal", None) else ""),
        path=config.path, values=values, given=frozenset(set_here), hf_class=family.hf_class,
        training_defaults=training, differences=tuple(differences), hf_source=dict(config.raw),
    )


# -- spec -> HF -----------------------------------------------------------------------------------


def hf_config_of(spec: Spec, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HF config fields of the spec's model, as porter ports it (sizes override the spec's own)."""
    config: dict[str, Any] = {}
    source = getattr(spec, "hf_source", None) or {}
    model_type = source.get("model_type") or (model_type_of(spec.hf_class) if spec.hf_class else None)
    if spec.hf_class:
        config["architectures"] = [spec.hf_class]
    if model_type:
        config["model_type"] = model_type
    for difference in spec.differences:
        difference.to_hf(spec, config)
    for hf, dest in TRAINING_FIELDS.items():
        if dest in spec.training_defaults and class_defines(model_type, hf, unknown=False):
            config[hf] = spec.training_defaults[dest]
    config.update(sizes or {})
    vocab = config.get("vocab_size")
    for key in TOKEN_IDS:  # a class default for the real vocabulary (Phi3Config: pad 32000) names no token of a small one
        value = class_default(model_type, key)
        if key not in config and isinstance(value, int) and vocab is not None and not 0 <= value < vocab:
            config[key] = None
    return config


def hf_file_of(spec) -> dict[str, Any]:
    """`porter spec --as hf`: the config.json of the model porter ports. porter's own fields,
    then the source file's fields porter does not model (token ids, dtype...) as they are; rope
    in the source's spelling (`rope_theta` + `rope_scaling`, or `rope_parameters`)."""
    out = hf_config_of(spec)
    source = getattr(spec, "hf_source", None) or {}
    for key, value in source.items():
        if key not in out and key not in ROPE_FIELDS:
            out[key] = value
    legacy = source and "rope_parameters" not in source
    return rope_spelling(out, legacy=bool(legacy) if source else not transformers_uses_rope_parameters())


def rope_spelling(config: dict[str, Any], legacy: bool) -> dict[str, Any]:
    """The config with its rope fields as `rope_theta` + `rope_scaling` (legacy) or `rope_parameters`;
    a rotary per layer type (Gemma-3) as transformers 5's nested `rope_parameters`, or transformers
    4's `rope_theta`, `rope_scaling` and `rope_local_base_freq`."""
    out = dict(config)
    params = rope_parameters_of(out)
    nested = (out.get("rope_parameters") or {}).get(LOCAL_LAYERS)
    for key in ROPE_FIELDS:
        out.pop(key, None)
    if isinstance(nested, dict):
        if not legacy:
            out["rope_parameters"] = {GLOBAL_LAYERS: params, LOCAL_LAYERS: dict(nested)}
            return out
        out["rope_local_base_freq"] = nested.get("rope_theta")
    if not params.get("rope_theta") and params.get("rope_type", "default") == "default":
        return out
    if not legacy:
        out["rope_parameters"] = params
        return out
    out["rope_theta"] = params.pop("rope_theta", 10000.0)
    out["rope_scaling"] = params if params.get("rope_type", "default") != "default" else None
    return out


def transformers_uses_rope_parameters() -> bool:
    """Does the installed transformers spell rope as `rope_parameters` (5.x) or `rope_theta` +
    `rope_scaling` (4.x)? (5.x's spelling when transformers is not installed.)"""
    import inspect

    try:
        from transformers import LlamaConfig
    except ImportError:
        return True
    return "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters


def installed_rope_spelling(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its rope fields as the installed transformers reads them."""
    out = rope_spelling(config, legacy=not transformers_uses_rope_parameters())
    if out.get("rope_scaling", 0) is None:
        del out["rope_scaling"]
    return out
