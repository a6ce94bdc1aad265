"""The versions a bench result is tied to, printed under each table."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import porter


def versions(*dists: str) -> str:
    """"python X, porter Y, <dist> Z, ..." for the distributions that are installed."""
    parts = [f"python {platform.python_version()}", f"porter {porter.__version__}"]
    for dist in dists:
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)
