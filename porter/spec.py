"""Diff specs: how a model family differs from GPT, as data (model_diffs/<name>.toml).

The schema below is itself data: every field has its type, its allowed values or range,
and GPT's value (the base). A spec is validated once, when it is loaded; every error names
the file, the field, what was found and what is allowed. After that the rest of porter reads
plain values from the frozen `Spec`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from porter.errors import PorterError
from porter.resources import specs_dir


@dataclass(frozen=True)
class Field:
    """One field of a spec section: its type, allowed values or bounds, and GPT's value."""

    kind: type
    base: Any  # GPT's value; also the default when the field is left out
    choices: tuple = ()
    low: float | None = None  # exclusive lower bound for numbers
    high: float | None = None  # exclusive upper bound for numbers
    help: str = ""

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        bounds = []
        if self.low is not None:
            bounds.append(f"> {self.low:g}")
        if self.high is not None:
            bounds.append(f"< {self.high:g}")
        return f"a {'whole number' if self.kind is int else 'number'}" + (
            " " + " and ".join(bounds) if bounds else ""
        )


# section -> field -> Field. The switches porter can port; GPT is the base of each.
SCHEMA: dict[str, dict[str, Field]] = {
    "activation": {
        "type": Field(str, "gelu", choices=("gelu", "swiglu"), help="MLP activation"),
    },
    "position_embedding": {
        "type": Field(str, "learned", choices=("learned", "rotary"), help="position encoding"),
        "rope_theta": Field(float, 10000.0, low=0.0, help="rotary base"),
        "layout": Field(str, "rotate_half", choices=("rotate_half",), help="rotary pairing"),
    },
    "norm": {
        "type": Field(str, "layernorm", choices=("layernorm", "rmsnorm"), help="norm class"),
        "eps": Field(float, 1e-5, low=0.0, high=1.0, help="norm epsilon"),
        "final_norm": Field(bool, True, help="a norm after the last layer"),
    },
    "embeddings": {
        "tied": Field(bool, True, help="output projection shares the input embedding"),
    },
    "mlp": {
        "ffn_hidden_size": Field(str, "4h", choices=("4h", "2/3*4h"), help="default MLP width"),
        "multiple_of": Field(int, 1, low=0, help="round the 2/3*4h width up to this"),
    },
    "linear": {
        "bias": Field(bool, True, help="bias in every linear layer"),
    },
    "tokenizer": {
        "type": Field(str, "gpt2bpe", choices=("gpt2bpe", "sentencepiece"), help="tokenizer"),
    },
}

# The spec field behind each feature a port plans (`porter explain`, `porter diff --stat`).
# Features the planner adds on its own behalf ("checks": validating the new switches) have none.
FEATURE_FIELDS: dict[str, str] = {
    "swiglu": "activation.type",
    "rotary": "position_embedding.type",
    "rope_theta": "position_embedding.rope_theta",
    "rmsnorm": "norm.type",
    "no_final_norm": "norm.final_norm",
    "untied": "embeddings.tied",
    "ffn_rule": "mlp.ffn_hidden_size",
    "no_bias": "linear.bias",
    "sentencepiece": "tokenizer.type",
    "tokenizer_model": "tokenizer.type",
    "model": "model.name",
}

MODEL_FIELDS = {
    "name": "the spec's name, as given to `porter apply NAME`",
    "class_prefix": "prefix of the generated classes, e.g. LLaMA -> LLaMAModel",
    "script": "the generated entry point, e.g. pretrain_llama.py",
    "description": "one line for `porter list`",
}

TRAINING_DEFAULT_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Spec:
    """A validated diff spec. Values are plain Python; `path` is where it was read from."""

    name: str
    class_prefix: str
    script: str
    description: str
    path: str
    activation: str
    position_embedding: str
    rope_theta: float
    rotary_layout: str
    norm: str
    norm_eps: float
    final_norm: bool
    tied_embeddings: bool
    ffn_rule: str
    ffn_multiple_of: int
    bias: bool
    tokenizer: str
    training_defaults: dict = field(default_factory=dict)

    # The features a port can add, each tied to the switch that asks for it. A feature is
    # wanted when its switch differs from GPT's value.
    def features(self) -> dict[str, bool]:
        return {
            "swiglu": self.activation == "swiglu",
            "rotary": self.position_embedding == "rotary",
            "rmsnorm": self.norm == "rmsnorm",
            "no_final_norm": not self.final_norm,
            "untied": not self.tied_embeddings,
            "ffn_rule": self.ffn_rule == "2/3*4h",
            "no_bias": not self.bias,
            "sentencepiece": self.tokenizer == "sentencepiece",
        }

    def wants(self, feature: str) -> bool:
        return self.features()[feature]

    @property
    def model_class(self) -> str:
        return f"{self.class_prefix}Model"

    @property
    def module_name(self) -> str:
        return f"{self.name}_model"

    def ffn_hidden_size(self, hidden_size: int) -> int:
        """The default MLP width for a hidden size, by this spec's rule."""
        return default_ffn_hidden_size(hidden_size, self.ffn_rule, self.ffn_multiple_of)

    def summary(self) -> dict[str, str]:
        """switch -> 'value (GPT: base)' for the switches that differ from GPT."""
        out = {}
        for section, fields in SCHEMA.items():
            for key, fld in fields.items():
                value = self._raw[section][key]
                if value != fld.base:
                    out[f"{section}.{key}"] = f"{value!r} (GPT: {fld.base!r})"
        return out

    def value_of(self, dotted: str) -> tuple[Any, Any]:
        """A field's value and GPT's, by its dotted name ("norm.type" -> ("rmsnorm", "layernorm"))."""
        section, key = dotted.split(".", 1)
        if section == "model":
            return getattr(self, key), None
        return self._raw[section][key], SCHEMA[section][key].base

    @property
    def _raw(self) -> dict[str, dict[str, Any]]:
        return {
            "activation": {"type": self.activation},
            "position_embedding": {
                "type": self.position_embedding,
                "rope_theta": self.rope_theta,
                "layout": self.rotary_layout,
            },
            "norm": {"type": self.norm, "eps": self.norm_eps, "final_norm": self.final_norm},
            "embeddings": {"tied": self.tied_embeddings},
            "mlp": {"ffn_hidden_size": self.ffn_rule, "multiple_of": self.ffn_multiple_of},
            "linear": {"bias": self.bias},
            "tokenizer": {"type": self.tokenizer},
        }


def default_ffn_hidden_size(hidden_size: int, rule: str, multiple_of: int = 1) -> int:
    """4h, or LLaMA's int(2/3 * 4h) rounded up to `multiple_of` (11008 for h = 4096)."""
    if rule == "4h":
        return 4 * hidden_size
    width = 8 * hidden_size // 3
    return multiple_of * math.ceil(width / multiple_of)


def available_specs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(specs_dir().glob("*.toml"))}


def load_spec(name_or_path: str) -> Spec:
    """Load a spec by name (model_diffs/<name>.toml) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        known = available_specs()
        if name_or_path not in known:
            raise PorterError(
                f"unknown model {name_or_path!r}",
                file=f"model_diffs/{name_or_path}.toml",
                construct="a diff spec named model_diffs/<name>.toml",
                found="specs: " + ", ".join(sorted(known)),
                fix=f"use one of {', '.join(sorted(known))}, or pass the path to your own .toml spec",
            )
        path = known[name_or_path]
    if not path.exists():
        raise PorterError(
            f"spec file not found: {path}",
            file=str(path),
            construct="a diff spec (.toml), see model_diffs/llama.toml",
            found="nothing at that path",
            fix="check the path of the .toml spec, or give a spec name (porter list)",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PorterError(
            f"cannot read spec file {path}",
            file=str(path),
            construct="a readable UTF-8 .toml file",
            found=str(exc),
            fix="make the spec a readable UTF-8 text file",
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PorterError(
            f"malformed spec: {exc}",
            file=str(path),
            construct="TOML (https://toml.io)",
            found=str(exc),
            fix="fix the TOML syntax at the position given",
        ) from exc
    return parse_spec(data, str(path))


def parse_spec(data: dict, path: str = "<spec>") -> Spec:
    """Validate a spec's parsed TOML and freeze it."""

    def fail(field_name: str, found: Any, allowed: str) -> PorterError:
        return PorterError(
            f"invalid spec field {field_name}",
            file=path,
            construct=field_name,
            found=repr(found),
            fix=f"set {field_name} to {allowed}",
        )

    allowed_sections = {"model", "training_defaults", *SCHEMA}
    for section in data:
        if section not in allowed_sections:
            raise PorterError(
                f"unknown spec section [{section}]",
                file=path,
                construct=f"[{section}]",
                fix="allowed sections: " + ", ".join(sorted(allowed_sections)),
            )
        if not isinstance(data[section], dict):
            raise fail(section, data[section], "a [table]")

    model = data.get("model")
    if not model:
        raise PorterError(
            "spec has no [model] section",
            file=path,
            construct="[model]",
            fix="add [model] with " + ", ".join(MODEL_FIELDS),
        )
    for key in model:
        if key not in MODEL_FIELDS:
            raise PorterError(
                f"unknown spec field model.{key}",
                file=path,
                construct=f"model.{key}",
                fix="allowed fields: " + ", ".join(MODEL_FIELDS),
            )
    for key in ("name", "class_prefix"):
        value = model.get(key)
        if not isinstance(value, str) or not value.isidentifier():
            raise fail(f"model.{key}", value, "a Python identifier string")
    script = model.get("script", f"pretrain_{model['name']}.py")
    if not isinstance(script, str) or not script.endswith(".py") or "/" in script:
        raise fail("model.script", script, "a file name ending in .py, at the tree root")
    description = model.get("description", "")
    if not isinstance(description, str):
        raise fail("model.description", description, "a string")

    values: dict[str, dict[str, Any]] = {}
    for section, fields in SCHEMA.items():
        given = data.get(section, {})
        for key in given:
            if key not in fields:
                raise PorterError(
                    f"unknown spec field {section}.{key}",
                    file=path,
                    construct=f"{section}.{key}",
                    fix="allowed fields: " + ", ".join(fields),
                )
        values[section] = {}
        for key, fld in fields.items():
            value = given.get(key, fld.base)
            name = f"{section}.{key}"
            if fld.kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, fld.kind) or (fld.kind is not bool and isinstance(value, bool)):
                raise fail(name, value, fld.describe())
            if fld.choices and value not in fld.choices:
                raise fail(name, value, fld.describe())
            if fld.low is not None and not value > fld.low:
                raise fail(name, value, fld.describe())
            if fld.high is not None and not value < fld.high:
                raise fail(name, value, fld.describe())
            values[section][key] = value

    # Combinations that make no sense.
    if values["mlp"]["ffn_hidden_size"] == "4h" and "multiple_of" in data.get("mlp", {}):
        raise PorterError(
            "inconsistent spec: mlp.multiple_of only applies to mlp.ffn_hidden_size = '2/3*4h'",
            file=path,
            construct="mlp.multiple_of",
            found=f"ffn_hidden_size = '4h', multiple_of = {values['mlp']['multiple_of']}",
            fix="remove mlp.multiple_of, or set mlp.ffn_hidden_size = '2/3*4h'",
        )
    pe = data.get("position_embedding", {})
    if values["position_embedding"]["type"] != "rotary":
        for key in ("rope_theta", "layout"):
            if key in pe:
                raise PorterError(
                    f"inconsistent spec: position_embedding.{key} only applies to rotary",
                    file=path,
                    construct=f"position_embedding.{key}",
                    found=f"position_embedding.type = {values['position_embedding']['type']!r}",
                    fix=f"remove position_embedding.{key}, or set position_embedding.type = 'rotary'",
                )

    defaults = data.get("training_defaults", {})
    for key, value in defaults.items():
        if not key.isidentifier():
            raise fail(f"training_defaults.{key}", key, "an argument dest such as init_method_std")
        if not isinstance(value, TRAINING_DEFAULT_TYPES):
            raise fail(f"training_defaults.{key}", value, "a boolean, number or string")

    return Spec(
        name=model["name"],
        class_prefix=model["class_prefix"],
        script=script,
        description=description,
        path=path,
        activation=values["activation"]["type"],
        position_embedding=values["position_embedding"]["type"],
        rope_theta=values["position_embedding"]["rope_theta"],
        rotary_layout=values["position_embedding"]["layout"],
        norm=values["norm"]["type"],
        norm_eps=values["norm"]["eps"],
        final_norm=values["norm"]["final_norm"],
        tied_embeddings=values["embeddings"]["tied"],
        ffn_rule=values["mlp"]["ffn_hidden_size"],
        ffn_multiple_of=values["mlp"]["multiple_of"],
        bias=values["linear"]["bias"],
        tokenizer=values["tokenizer"]["type"],
        training_defaults=dict(defaults),
    )
