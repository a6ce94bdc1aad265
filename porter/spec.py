"""Diff specs: how a model family differs from GPT, as data (model_diffs/<name>.toml).

The schema is itself data, assembled from the differences a spec is read with
(porter/differences/, registered in porter.catalog): every field has its type, its allowed
values or range, and GPT's value (the base). A spec is validated once, when it is parsed;
every error names the file, the field, what was found and what is allowed. After that the
rest of porter reads plain values from the frozen `Spec`: `spec["norm.eps"]`, and the
differences it was read with from `spec.differences` (`spec.wanted()`: those it turns on).
Finding a spec by name, or reading one from a file, is porter.catalog's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from porter.errors import PorterError

if TYPE_CHECKING:
    from porter.schema import Field

# A spec's differences are porter.differences.base.Difference objects (each with `fields`,
# `validate` and `wanted`); spec.py stays below them and names no class of theirs.
Differences = Sequence[Any]

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
    differences: tuple = field(default=(), compare=False, repr=False)  # read with these, in plan order
    extends: str | None = None  # the spec this one states its delta from (`extends = "llama"`)
    # the config.json the spec was read from, as written (porter spec --as hf, verify's reference)
    hf_source: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]

    @property
    def schema(self) -> dict[str, Field]:
        """Every field of every difference the spec was read with, dotted name -> Field."""
        return schema_of(self.differences)

    def wanted(self) -> list:
        """The differences this spec turns on, in plan order."""
        return [d for d in self.differences if d.wanted(self)]

    @property
    def model_class(self) -> str:
        return f"{self.class_prefix}Model"

    @property
    def module_name(self) -> str:
        return f"{self.name}_model"

    def with_values(self, **changes: Any) -> Spec:
        """The spec with some fields changed, by dotted name given as keyword
        (`spec.with_values(**{"norm.eps": 1e-5})`); the values are checked like a spec file's."""
        schema = self.schema
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
        schema = self.schema
        return {name: f"{_shown(value)} (GPT: {schema[name].base!r})"
                for name, value in self.values.items() if value != schema[name].base}

    def value_of(self, dotted: str) -> tuple[Any, Any]:
        """A field's value and GPT's, by its dotted name ("norm.type" -> ("rmsnorm", "layernorm"))."""
        section, key = dotted.split(".", 1)
        if section == "model":
            return getattr(self, key), None
        return self.values[dotted], self.schema[dotted].base


def _shown(value: Any) -> str:
    """A value for people: a long list (longrope's factors) by its ends and its length."""
    if isinstance(value, list) and len(value) > 4:
        return f"[{value[0]!r}, {value[1]!r}, ..., {value[-1]!r}] ({len(value)} numbers)"
    return repr(value)


def spec_toml(spec: Spec) -> str:
    """The spec as a .toml file that loads back to the same spec (`porter spec CONFIG`)."""
    import tomli_w

    model = {"name": spec.name, "class_prefix": spec.class_prefix, "script": spec.script,
             "description": spec.description}
    if spec.hf_class:
        model["hf_class"] = spec.hf_class
    data: dict[str, Any] = {"model": model}
    schema = spec.schema
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


def schema_of(differences: Differences) -> dict[str, Field]:
    """Every spec field of the differences, dotted name -> schema Field."""
    out: dict[str, Field] = {}
    for difference in differences:
        out.update(difference.fields)
    return out


def _flatten(table: dict, prefix: str, out: dict[str, Any]) -> None:
    for key, value in table.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            _flatten(value, name, out)
        else:
            out[name] = value


def parse_spec(data: dict, path: str, differences: Differences) -> Spec:
    """Validate a spec's parsed TOML against the differences' fields and freeze it
    (porter.catalog.parse_spec: with the registered differences)."""
    schema = schema_of(differences)

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

    for difference in differences:
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
        differences=tuple(differences),
    )
