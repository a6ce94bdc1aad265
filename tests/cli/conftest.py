"""Fixtures for the CLI suite: porter's app under CliRunner, a fresh tree, a snapshot of a tree.

`ported_tree`, `smoke_workdir` and `copy_sample_tree` are the whole suite's (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from tests.conftest import copy_sample_tree


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (but porter's own state, git's and caches) -> its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".porter" not in p.parts and "__pycache__" not in p.parts and ".git" not in p.parts
    }


@pytest.fixture
def porter():
    """porter(*args) -> click Result (stdout and stderr apart, and together in .output)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], prog_name="porter")

    return run


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    return copy_sample_tree(tmp_path / "Megatron-DeepSpeed")


@pytest.fixture
def ported(ported_tree: Path) -> Path:
    """The shared ported sample tree (read-only: copy it to change it)."""
    return ported_tree
