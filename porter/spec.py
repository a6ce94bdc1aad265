"""Diff specs: how a model family differs from GPT, as data (model_diffs/<name>.toml).

The schema is itself data, assembled from the differences porter knows
(porter/features/): every field has its type, its allowed values or range, and GPT's value
(the base). A spec is validated once, when it is loaded; every error names the file, the
field, what was found and what is allowed. After that the rest of porter reads plain values
from the frozen `Spec`: `spec["norm.eps"]`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from porter.errors import PorterError
from porter.features import DIFFERENCES, fields
from porter.resources import specs_dir

MODEL_FIELDS = {
    "name": "the spec's name, as given to `porter apply NAME`",
    "class_prefix": "prefix of the generated classes, e.g. LLaMA -> LLaMAModel",
    "script": "the generated entry point, e.g. pretrain_llama.py",
    "description": "one line for `porter list`",
    "hf_class": "the HF transformers class porter verifies the port against, e.g. LlamaForCausalLM",
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
    values: Mapping[str, Any]  # every field of every difference, by dotted name
    given: frozenset[str] = frozenset()  # the fields the spec sets itself
    hf_class: str = ""
    training_defaults: dict = field(default_factory=dict)
    renamed_because: tuple[str, ...] = ()  # what the tree already holds under the family's own names (porter.naming)
    # the config.json the spec was read from, as written (porter spec --as hf, verify's reference)
    hf_source: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]

    @property
    def model_class(self) -> str:
        return f"{self.class_prefix}Model"

    @property
    def module_name(self) -> str:
        return f"{self.name}_model"

    def with_values(self, **changes: Any) -> Spec:
        """The spec with some fields changed, by dotted name given as keyword
        (`spec.with_values(**{"norm.eps": 1e-5})`); the values are checked like a spec file's."""
        schema = fields()
        values = dict(self.values)
        for name, value in changes.items():
            try:
                values[name] = schema[name].check(value)
            except ValueError as exc:
                raise PorterError(f"invalid spec field {name}", file=self.path, construct=name,
                                  found=repr(value), fix=f"set {name} to {exc}") from None
        return replace(self, values=values, given=self.given | set(changes))

    def summary(self) -> dict[str, str]:
        """field -> 'value (GPT: base)' for the fields that differ from GPT."""
        schema = fields()
        return {name: f"{value!r} (GPT: {schema[name].base!r})"
                for name, value in self.values.items() if value != schema[name].base}

    def value_of(self, dotted: str) -> tuple[Any, Any]:
        """A field's value and GPT's, by its dotted name ("norm.type" -> ("rmsnorm", "layernorm"))."""
        section, key = dotted.split(".", 1)
        if section == "model":
            return getattr(self, key), None
        return self.values[dotted], fields()[dotted].base


def spec_toml(spec: Spec) -> str:
    """The spec as a .toml file that loads back to the same spec (`porter spec CONFIG`)."""
    import tomli_w

    model = {"name": spec.name, "class_prefix": spec.class_prefix, "script": spec.script,
             "description": spec.description}
    if spec.hf_class:
        model["hf_class"] = spec.hf_class
    data: dict[str, Any] = {"model": model}
    schema = fields()
    for name, value in spec.values.items():
        if value is None or value == schema[name].base:
            continue
        *tables, key = name.split(".")
        holder = data
        for table in tables:
            holder = holder.setdefault(table, {})
        holder[key] = value
    if spec.training_defaults:
        data["training_defaults"] = dict(spec.training_defaults)
    return tomli_w.dumps(data)


def available_specs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(specs_dir().glob("*.toml"))}


def load_spec(name_or_path: str) -> Spec:
    """Load a spec by name (model_diffs/<name>.toml), by path to a .toml file, or from an HF
    config.json (or a model folder holding one)."""
    path = Path(name_or_path)
    if path.name == "config.json" or (path.is_dir() and (path / "config.json").is_file()):
        from porter.hf_config import spec_from_hf

        return spec_from_hf(path)
    if path.suffix != ".toml":
        known = available_specs()
        if name_or_path not in known:
            raise PorterError(
                f"unknown model {name_or_path!r}",
                file=f"model_diffs/{name_or_path}.toml",
                construct="a diff spec named model_diffs/<name>.toml, a .toml file, or an HF config.json",
                found="specs: " + ", ".join(sorted(known)),
                fix=f"use one of {', '.join(sorted(known))}, the path to your own .toml spec, "
                    "or an HF model folder holding config.json",
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


def _flatten(table: dict, prefix: str, out: dict[str, Any]) -> None:
    for key, value in table.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            _flatten(value, name, out)
        else:
            out[name] = value


def parse_spec(data: dict, path: str = "<spec>") -> Spec:
    """Validate a spec's parsed TOML and freeze it."""
    schema = fields()

    def fail(field_name: str, found: Any, allowed: str, message: str | None = None) -> PorterError:
        return PorterError(
            message or f"invalid spec field {field_name}",
            file=path,
            construct=field_name,
            found=found if isinstance(found, str) and message else repr(found),
            fix=allowed if message else f"set {field_name} to {allowed}",
        )

    sections = {name.split(".")[0] for name in schema}
    allowed_sections = {"model", "training_defaults", *sections}
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
    for key in ("description", "hf_class"):
        if not isinstance(model.get(key, ""), str):
            raise fail(f"model.{key}", model[key], "a string")

    given: dict[str, Any] = {}
    for section in sections:
        _flatten(data.get(section, {}), section, given)
    for name in given:
        if name not in schema:
            section = name.split(".")[0]
            here = [f for f in schema if f.startswith(section + ".")]
            raise PorterError(
                f"unknown spec field {name}",
                file=path,
                construct=name,
                fix="allowed fields: " + ", ".join(f.removeprefix(section + ".") for f in here),
            )
    values: dict[str, Any] = {}
    for name, fld in schema.items():
        if name not in given:
            values[name] = fld.base
            continue
        try:
            values[name] = fld.check(given[name])
        except ValueError as exc:
            raise fail(name, given[name], str(exc)) from None

    for difference in DIFFERENCES:
        difference.validate(values, set(given), fail)

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
        description=model.get("description", ""),
        path=path,
        values=values,
        given=frozenset(given),
        hf_class=model.get("hf_class", ""),
        training_defaults=dict(defaults),
    )
