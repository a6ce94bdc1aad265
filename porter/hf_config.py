"""An HF config.json as a MODEL: the spec it describes, and the config a spec describes.

HF -> spec: the family comes from `model_type` (and `architectures`): of the bundled specs
whose reference class has that model type, the one closest to the config (fewest fields that
differ) gives what config.json leaves implicit in HF's modeling code (RMSNorm, SwiGLU, the
tokenizer kind...). Then every difference reads its own fields from the config (porter/differences/,
`from_hf`), and the model's sizes become the entry point's defaults. A field porter cannot
honour (an unknown rope type, a field the family's class does not have) is refused by name,
never ignored: every field a difference does not read is checked against the list of fields
that change nothing porter builds (a field set to null asks for nothing).

spec -> HF: every difference the spec wants writes its fields (`to_hf`); verify builds its
reference from that, at a tiny size, and convert writes it next to the weights.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from porter.errors import PorterError
from porter.spec import Differences, Spec, schema_of

# config.json fields that change nothing porter builds or checks (bookkeeping, generation,
# runtime switches, fields the differences read as a group).
INERT_FIELDS = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_cache", "initializer_range", "pretraining_tp", "attention_dropout",
    "hidden_dropout", "_name_or_path", "return_dict", "output_hidden_states", "output_attentions",
    "tie_encoder_decoder", "is_decoder", "is_encoder_decoder", "add_cross_attention", "torchscript",
    "chunk_size_feed_forward", "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id",
    "task_specific_params", "problem_type", "id2label", "label2id", "quantization_config",
    "bad_words_ids", "max_length", "min_length", "do_sample", "num_beams", "temperature", "top_k", "top_p",
    "repetition_penalty", "num_return_sequences", "pruned_heads", "finetuning_task", "cross_attention_hidden_size",
    "output_router_logits", "_attn_implementation_autoset",
    "tf_legacy_loss", "use_bfloat16", "chunk_size",
    # Gemma-2/3: the generation cache's kind, and gemma-2-9b/27b's old name of sliding_window (read by
    # nothing in transformers; sliding_window is)
    "cache_implementation", "sliding_window_size",
    # remote code a config offers (transformers reads the file with its own class unless trusted),
    # and dropout rates (training only, like attention_dropout; Phi-3: resid_pdrop, embd_pdrop)
    "auto_map", "resid_pdrop", "embd_pdrop",
}


# the layer types of a model with a rotary per layer type (Gemma-3's nested rope_parameters)
GLOBAL_LAYERS, LOCAL_LAYERS = "full_attention", "sliding_attention"


TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


class HFConfig(dict):
    """A config.json's fields, with the rope fields read in either transformers' spelling."""

    def __init__(self, data: dict, path: str = "config.json") -> None:
        super().__init__(data)
        self.path = path

    def rope_parameters(self) -> dict[str, Any]:
        """rope_theta, rope_type and the scaling fields, from `rope_parameters` (transformers 5)
        or `rope_theta` + `rope_scaling` (transformers 4); a model with a rotary per layer type
        (Gemma-3: `rope_parameters.full_attention` and `.sliding_attention`) gives its global
        layers' (the local ones' base is porter.differences.local_rotary's)."""
        params = dict(self.get("rope_parameters") or {})
        if isinstance(params.get(GLOBAL_LAYERS), dict):
            params = dict(params[GLOBAL_LAYERS])
        if "rope_theta" in self and "rope_theta" not in params:
            params["rope_theta"] = self["rope_theta"]
        scaling = self.get("rope_scaling") or {}
        for key, value in scaling.items():
            params.setdefault("rope_type" if key == "type" else key, value)
        params.setdefault("rope_type", params.pop("type", "default"))
        return params


def read_config(path: str | Path) -> HFConfig:
    """config.json (or the folder holding it), parsed; errors name the file."""
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
    return HFConfig(data, str(path))


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


def model_type_of(hf_class: str) -> str | None:
    """The model_type of an HF class name (LlamaForCausalLM -> llama), if installed."""
    try:
        return hf_class_of(hf_class).config_class.model_type
    except (ImportError, AttributeError):
        return None


def spec_values_from_hf(config: HFConfig, differences: Differences) -> dict[str, Any]:
    """Every spec field the config carries, read by the differences."""
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


def spec_from_hf(path: str | Path, differences: Differences,
                 family_specs: Callable[[str], list[Spec]]) -> Spec:
    """The spec an HF config.json (or a model folder holding one) describes, read with the
    differences; `family_specs(model_type)`: the bundled specs of that model type."""
    path = Path(path)
    config = read_config(path)
    model_type = config.get("model_type")
    families = family_specs(model_type) if isinstance(model_type, str) else []
    if not families:
        from porter.resources import specs_dir

        available = [p.stem for p in sorted(specs_dir().glob("*.toml"))]
        raise PorterError(
            f"porter has no spec for HF model_type {model_type!r}",
            file=config.path, construct="model_type (and architectures) of a family porter knows",
            found=f"model_type = {model_type!r}, architectures = {config.get('architectures')!r}",
            fix="port one of the families in `porter list` (" + ", ".join(available) + "), or write a spec "
                "(docs/writing-a-spec.md)",
        )
    # a field set to null asks for nothing (transformers writes every field of its config class:
    # a Mixtral config's window set to null)
    unknown = sorted(k for k in config if config[k] is not None and k not in INERT_FIELDS
                     and not any(k in d.hf_fields for d in differences))
    if unknown:
        raise PorterError(
            f"config.json has fields porter cannot honour: {', '.join(unknown)}",
            file=config.path, construct="the config fields of the family's differences",
            found=", ".join(f"{k} = {config[k]!r}" for k in unknown),
            fix="porter refuses what it would otherwise ignore; port this model by hand, or report the field",
        )
    read = spec_values_from_hf(config, differences)
    schema = schema_of(differences)

    def distance(spec) -> int:
        return sum(1 for k, v in read.items() if spec[k] != v)

    base = min(families, key=distance)
    values = dict(base.values)
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
    name = _name_from(path, model_type)
    prefix = "".join(part.capitalize() for part in name.split("_"))
    return Spec(
        name=name, class_prefix=prefix, script=f"pretrain_{name}.py",
        description=f"{base.description.split(':')[0]} from {config.path} (closest family: {base.name})",
        path=config.path, values=values, given=frozenset(set_here), hf_class=base.hf_class,
        training_defaults=dict(base.training_defaults), differences=tuple(differences),
    )


def hf_config_of(spec: Spec, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HF config fields of the spec's model (sizes override the spec's own)."""
    config: dict[str, Any] = {}
    model_type = model_type_of(spec.hf_class) if spec.hf_class else None
    if spec.hf_class:
        config["architectures"] = [spec.hf_class]
    if model_type:
        config["model_type"] = model_type
    for difference in spec.differences:
        difference.to_hf(spec, config)
    config.update(sizes or {})
    vocab = config.get("vocab_size")
    for key in TOKEN_IDS:  # a class default for the real vocabulary (Phi3Config: pad 32000) names no token of a small one
        value = class_default(model_type, key)
        if key not in config and isinstance(value, int) and vocab is not None and not 0 <= value < vocab:
            config[key] = None
    return config


def transformers_uses_rope_parameters() -> bool:
    """Does the installed transformers spell rope as `rope_parameters` (5.x) or `rope_theta` +
    `rope_scaling` (4.x)?"""
    import inspect

    from transformers import LlamaConfig

    return "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters


def installed_rope_spelling(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its rope fields as the installed transformers reads them (a rotary per
    layer type: transformers 5's nested `rope_parameters`, or transformers 4's `rope_theta`,
    `rope_scaling` and `rope_local_base_freq`)."""
    out = dict(config)
    params = HFConfig(out).rope_parameters()
    nested = (out.get("rope_parameters") or {}).get(LOCAL_LAYERS)
    for key in ("rope_parameters", "rope_theta", "rope_scaling"):
        out.pop(key, None)
    if isinstance(nested, dict):
        if transformers_uses_rope_parameters():
            out["rope_parameters"] = {GLOBAL_LAYERS: params, LOCAL_LAYERS: dict(nested)}
            return out
        out["rope_local_base_freq"] = nested.get("rope_theta")
    if not params.get("rope_theta") and params.get("rope_type", "default") == "default":
        return out
    if transformers_uses_rope_parameters():
        out["rope_parameters"] = params
    else:
        out["rope_theta"] = params.pop("rope_theta", 10000.0)
        if params.get("rope_type", "default") != "default":
            out["rope_scaling"] = params
    return out


def class_defines(model_type: str | None, name: str, unknown: bool = True) -> bool:
    """Does the transformers config class of `model_type` define the field `name`? LlamaConfig
    defines attention_bias; Qwen2Config does not (Qwen2's modeling code hard-codes its q, k, v
    biases), so there the family spec, not config.json, says where the biases are. An unknown or
    missing model type (or no transformers installed) answers `unknown`."""
    found = _defines(model_type, name) if model_type else None
    return unknown if found is None else found


def class_default(model_type: str | None, name: str) -> Any:
    """The value the transformers config class of `model_type` gives the field `name` when
    config.json leaves it out (Phi3Config: original_max_position_embeddings 4096); None where
    the class has no such field, or is unknown."""
    config = _config(model_type) if model_type else None
    return getattr(config, name, None)


@functools.cache
def _config(model_type: str):
    """The transformers config class of a model type, built with its defaults (None: unknown)."""
    try:
        from transformers import CONFIG_MAPPING

        return CONFIG_MAPPING[model_type]()
    except (ImportError, KeyError):
        return None


def _defines(model_type: str, name: str) -> bool | None:
    config = _config(model_type)
    return None if config is None else hasattr(config, name)
