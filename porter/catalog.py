"""The registry: the differences from GPT porter knows, and the specs made of them.

Each difference is a package (or a module) of porter/differences/: its spec fields, switch
spellings, edits, HF config fields, weights and probes (porter/differences/base.py). The
bundled ones are listed here once, in plan order (the order of the edits in each file and of
the entry point's defaults); `register` adds one from outside porter (a package of your own),
after the difference named by `after`. A spec is read with the differences registered when
it is read (`spec.differences`), so everything downstream loops over those.

Specs: a name (model_diffs/<name>.toml), a path to a .toml, or an HF config.json (or the
folder holding it). A spec may state only its delta from another: `extends = "llama"`.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from porter.differences.attention_scale import AttentionScale
from porter.differences.base import Difference
from porter.differences.bias import Bias
from porter.differences.embedding_scale import EmbeddingScale
from porter.differences.ffn_rule import FfnRule
from porter.differences.final_norm import FinalNorm
from porter.differences.fused_attention import FusedAttention
from porter.differences.gated_mlp import GatedMLP
from porter.differences.grouped_query import GroupedQueryAttention
from porter.differences.grouped_routing import GroupedRouting
from porter.differences.head_dim import HeadDim
from porter.differences.hf_fused_weights import HFFusedWeights
from porter.differences.latent_attention import LatentAttention
from porter.differences.local_rotary import LocalRotary
from porter.differences.moe import MixtureOfExperts
from porter.differences.multi_token_prediction import MultiTokenPrediction
from porter.differences.norm_eps import NormEps
from porter.differences.norm_placement import NormPlacement, PostNorm
from porter.differences.partial_rotary import PartialRotary
from porter.differences.qk_norm import QueryKeyNorm
from porter.differences.qkv_layout import FusedQKVLayout
from porter.differences.rmsnorm import RMSNormDifference
from porter.differences.rmsnorm.offset import NormOffset
from porter.differences.rope_scaling import RopeScaling
from porter.differences.rotary import Rotary
from porter.differences.shared_experts import SharedExperts
from porter.differences.sizes import Sizes
from porter.differences.sliding_window import SlidingWindow
from porter.differences.softcap import AttentionSoftcap
from porter.differences.softcap.final import FinalLogitSoftcap
from porter.differences.tokenizer import Tokenizer
from porter.differences.untied_head import UntiedHead
from porter.errors import PorterError
from porter.hf_config import spec_from_hf
from porter.render import add_template_folder
from porter.resources import specs_dir
from porter.schema import Field
from porter.spec import Spec, parse_spec, schema_of

_REGISTERED: list[Difference] = [
    GatedMLP(),
    Rotary(),
    RopeScaling(),
    PartialRotary(),
    RMSNormDifference(),
    NormOffset(),
    NormPlacement(),
    PostNorm(),
    FusedAttention(),
    FusedQKVLayout(),
    GroupedQueryAttention(),
    SlidingWindow(),
    LocalRotary(),
    AttentionSoftcap(),
    HeadDim(),
    LatentAttention(),
    AttentionScale(),
    QueryKeyNorm(),
    HFFusedWeights(),
    Bias(),
    UntiedHead(),
    FinalLogitSoftcap(),
    EmbeddingScale(),
    FfnRule(),
    Tokenizer(),
    NormEps(),
    FinalNorm(),
    Sizes(),
    MixtureOfExperts(),
    GroupedRouting(),
    SharedExperts(),
    MultiTokenPrediction(),
]


def differences() -> tuple[Difference, ...]:
    """Every registered difference, in plan order."""
    return tuple(_REGISTERED)


def register(difference: Difference, after: str | None = None) -> Difference:
    """Add a difference from outside porter (in plan order after the difference named `after`,
    else last). Its templates are looked up in its package's folder. Registering the same
    difference twice keeps the first."""
    if any(d.name == difference.name for d in _REGISTERED):
        return difference
    clash = set(schema_of([difference])) & set(fields())
    if clash:
        raise PorterError(f"the difference {difference.name} declares fields another one owns",
                          construct="fields of its own", found=", ".join(sorted(clash)),
                          fix="give the difference's fields a section of their own")
    at = len(_REGISTERED)
    if after is not None:
        at = next(i + 1 for i, d in enumerate(_REGISTERED) if d.name == after)
    _REGISTERED.insert(at, difference)
    module = importlib.import_module(type(difference).__module__)
    add_template_folder(Path(module.__file__).parent)
    return difference


def unregister(name: str) -> None:
    """Take a difference registered from outside porter away again (by name)."""
    _REGISTERED[:] = [d for d in _REGISTERED if d.name != name]


def load_plugins(modules: list[str], path: str) -> None:
    """Register the differences of the modules a spec names in `differences_from`: each module
    offers them in its DIFFERENCES list (each after the difference its `after` names, if any)."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PorterError(f"cannot import the difference module {name!r} the spec names", file=path,
                              construct="differences_from = [importable Python modules]", found=str(exc),
                              fix=f"make {name} importable (pip install it, or put its folder on PYTHONPATH)") from None
        offered = getattr(module, "DIFFERENCES", None)
        if not offered:
            raise PorterError(f"the difference module {name!r} offers no differences", file=path,
                              construct=f"DIFFERENCES = [...] in {name}", found="no DIFFERENCES list",
                              fix=f"list the module's Difference objects in {name}.DIFFERENCES")
        for difference in offered:
            register(difference, after=getattr(difference, "after", None))


def fields() -> dict[str, Field]:
    """Every spec field of every registered difference, dotted name -> schema Field."""
    return schema_of(_REGISTERED)


def spellings() -> dict:
    """switch -> its spellings (porter's own first), over every difference."""
    out = {}
    for difference in _REGISTERED:
        out.update(difference.spellings)
    return out


def switch_fields() -> dict[str, str]:
    """switch or difference name -> the spec field behind it (`porter explain`, `diff --stat`)."""
    out: dict[str, str] = {}
    for difference in _REGISTERED:
        own = difference.switch_fields
        first = next(iter(difference.fields), None)
        for name in (difference.name, *difference.spellings):
            field = own.get(name, first)
            if field is not None:
                out.setdefault(name, field)
    out["model"] = "model.name"
    return out


def profile_of(tree):
    """The tree's profile, with every difference's switch spellings looked for and its detector run."""
    from porter.profile import build_profile

    return build_profile(tree, spellings(), {d.name: d.detect for d in _REGISTERED})


# -- specs -----------------------------------------------------------------------------------


def available_specs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(specs_dir().glob("*.toml"))}


def parse(data: dict, path: str = "<spec>") -> Spec:
    """A spec's parsed TOML, its base spec (`extends`) and difference modules (`differences_from`)
    taken in, validated with the registered differences."""
    data = _extended(data, path, seen=(path,))
    load_plugins(list(data.pop("differences_from", [])), path)
    extends = data.pop("extends", None)
    spec = parse_spec(data, path, differences())
    return spec if extends is None else replace(spec, extends=extends)


def _extended(data: dict, path: str, seen: tuple[str, ...]) -> dict:
    """The spec's tables over its base's (`extends = "llama"`: a bundled name or a .toml path):
    every table merged key by key, the child's values winning; [model] is the child's own,
    but for hf_class, which it inherits."""
    base_name = data.get("extends")
    for key in ("extends", "differences_from"):
        if key in data and not (isinstance(data[key], str) if key == "extends" else
                                isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
            raise PorterError(f"invalid spec key {key}", file=path, construct=key,
                              found=repr(data[key]),
                              fix='extends = "a spec name or .toml path"; differences_from = ["python.module", ...]')
    if base_name is None:
        return dict(data)
    base_path = _spec_path(base_name)
    if str(base_path) in seen:
        raise PorterError("specs extend each other in a loop", file=path, construct=f'extends = "{base_name}"',
                          found=" -> ".join((*seen, str(base_path))), fix="break the loop of extends")
    base = _extended(_read_toml(base_path), str(base_path), (*seen, str(base_path)))
    out: dict[str, Any] = {}
    for key in set(base) | set(data):
        if key == "model":
            mine = dict(data.get("model", {}))
            if "hf_class" in base.get("model", {}):
                mine.setdefault("hf_class", base["model"]["hf_class"])
            out["model"] = mine
        elif isinstance(base.get(key), dict) and isinstance(data.get(key), dict):
            out[key] = _merged(base[key], data[key])
        elif key == "differences_from":
            out[key] = [*base.get(key, []), *[m for m in data.get(key, []) if m not in base.get(key, [])]]
        else:
            out[key] = data[key] if key in data else base[key]
    out["extends"] = base_name
    return out


def _merged(base: dict, mine: dict) -> dict:
    out = dict(base)
    for key, value in mine.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _spec_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
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
        return known[name_or_path]
    if not path.exists():
        raise PorterError(
            f"spec file not found: {path}",
            file=str(path),
            construct="a diff spec (.toml), see model_diffs/llama.toml",
            found="nothing at that path",
            fix="check the path of the .toml spec, or give a spec name (porter list)",
        )
    return path


def _read_toml(path: Path) -> dict:
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
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PorterError(
            f"malformed spec: {exc}",
            file=str(path),
            construct="TOML (https://toml.io)",
            found=str(exc),
            fix="fix the TOML syntax at the position given",
        ) from exc


def load_spec(name_or_path: str) -> Spec:
    """Load a spec by name (model_diffs/<name>.toml), by path to a .toml file, or from an HF
    config.json (or a model folder holding one)."""
    path = Path(name_or_path)
    if path.name == "config.json" or (path.is_dir() and (path / "config.json").is_file()):
        return spec_from_hf(path, differences(), bundled_families)
    path = _spec_path(name_or_path)
    return parse(_read_toml(path), str(path))


def bundled_families() -> dict[str, Spec]:
    """name -> the bundled spec, for every bundled spec with a reference class (hf_class): the
    families a config.json is read into by its model_type."""
    found = {}
    for name, path in available_specs().items():
        spec = load_spec(str(path))
        if spec.hf_class:
            found[name] = spec
    return found
