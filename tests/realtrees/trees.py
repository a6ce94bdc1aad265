"""The real trees under PORTER_REAL_TREES, shared by the tests in tests/realtrees.

ROOT is the folder of read-only originals (unset: every real-tree test skips); NEEDS_TREES is the marks a
real-tree test module starts its ``pytestmark`` with; ``source_of`` names an original (skipping the test when
it is missing) and ``copy_of`` copies it, the tests working on the copy only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = os.environ.get("PORTER_REAL_TREES")

NEEDS_TREES = [
    pytest.mark.realtrees,
    pytest.mark.skipif(not ROOT, reason="PORTER_REAL_TREES is not set"),
]


def source_of(label: str) -> Path:
    """The original tree ``label`` under ROOT; the test skips when it is missing."""
    source = Path(ROOT or ".") / label
    if not source.is_dir():
        pytest.skip(f"{source} is missing")
    return source


def copy_of(label: str, dest: Path) -> Path:
    """A copy of the original tree ``label`` at ``dest`` (links copied as links); returns ``dest``."""
    shutil.copytree(source_of(label), dest, symlinks=True)
    return dest
