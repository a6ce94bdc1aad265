"""The Jinja environment that renders porter's new files.

StrictUndefined: a template that names a value the plan did not give fails loudly. Every
rendered file starts with a header that says it is generated, from which spec and template,
by which porter version. Templates receive plain values only (no parser nodes).

Templates are found by name: the family's own files in templates/ (model, entry point),
a difference's files in its package folder (porter/differences/<name>/), and the folders
`add_template_folder` registers (a difference from outside porter).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from porter import __version__
from porter.resources import differences_dir, specs_dir, templates_dir
from porter.source import GENERATED_MARK

if TYPE_CHECKING:
    from porter.planner import Plan
    from porter.spec import Spec

__all__ = ["GENERATED_MARK", "add_template_folder", "environment", "header", "render", "template_label", "template_path"]

_EXTRA_FOLDERS: list[Path] = []  # folders of differences registered from outside porter


def add_template_folder(folder: Path) -> None:
    """Templates of a difference that lives outside porter (porter.catalog.register)."""
    folder = Path(folder).resolve()
    if folder not in _EXTRA_FOLDERS:
        _EXTRA_FOLDERS.append(folder)


def _folders() -> list[Path]:
    packages = sorted(p for p in differences_dir().iterdir() if p.is_dir() and not p.name.startswith("_"))
    return [templates_dir(), *packages, *_EXTRA_FOLDERS]


def template_path(name: str) -> Path:
    """Where the template `name` is: templates/ first, then each difference's folder; a name
    `<package>/<file>` is the file of that difference package's folder (its model slots)."""
    folders = _folders()
    if "/" in name:
        package, name = name.split("/", 1)
        folders = [f for f in folders if f.name == package]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise jinja2.TemplateNotFound(name)


def template_label(name: str) -> str:
    """The template as a header or `porter explain` names it: templates/<name> for the family's
    own files, its path from the repository root (porter/differences/<d>/<name>) for a difference's."""
    path = template_path(name)
    if path.parent == templates_dir():
        return f"templates/{name}"
    root = differences_dir().parent.parent
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return f"{path.parent.name}/{name}"


class _Loader(jinja2.BaseLoader):
    def get_source(self, environment, template) -> tuple[str, str, Callable[[], bool]]:
        path = template_path(template)
        mtime = path.stat().st_mtime
        return path.read_text(encoding="utf-8"), str(path), lambda: path.stat().st_mtime == mtime


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_Loader(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["py"] = repr
    return env


def spec_label(spec: Spec) -> str:
    """How a header names the spec: model_diffs/<name>.toml for bundled specs."""
    path = Path(spec.path)
    try:
        path.resolve().relative_to(specs_dir().resolve())
        return f"model_diffs/{path.name}"
    except ValueError:
        return path.name


def header(spec: Spec, template: str, difference: str | None = None) -> str:
    """The family's own files name the spec; a difference's files (rmsnorm.py, ...) are shared
    by every family ported into the tree and name the difference instead."""
    if difference is None:
        return (
            f"{GENERATED_MARK} {__version__} from {spec_label(spec)} with template {template_label(template)}.\n"
            f"# Generated file: `porter apply {spec.name} --target <tree>` rewrites it and "
            f"`porter revert --target <tree>` removes it.\n"
        )
    return (
        f"{GENERATED_MARK} {__version__} for the {difference} difference with template {template_label(template)}.\n"
        f"# Generated file, shared by the families ported into this tree: `porter apply` writes it and "
        f"`porter revert --target <tree>` removes it.\n"
    )


def render(template: str, plan: Plan, context: dict, feature: str = "model") -> str:
    """A template rendered with the plan's values (each difference's, and `model`) and the
    edit's own context; the header names the spec (the family's own files, feature "model")
    or the difference, and the template."""
    body = environment().get_template(template).render(**plan.values, **context)
    return header(plan.spec, template, None if feature == "model" else feature) + body
