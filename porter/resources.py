"""Where porter's data lives: templates, diff specs and the bundled sample tree.

A wheel carries them inside the package (see pyproject's force-include); a source checkout
or an editable install has them at the repository root. Both are looked up here, once.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"porter's data folder {name!r} is missing from {_PACKAGE}")


def templates_dir() -> Path:
    return _data_dir("templates")


def differences_dir() -> Path:
    """porter's differences, one package or module each (their templates sit in their packages)."""
    return _PACKAGE / "differences"


def specs_dir() -> Path:
    return _data_dir("model_diffs")


def sample_tree_dir() -> Path:
    return _data_dir("sample_tree")
