"""Fixtures for the CLI suite: fresh copies of the sample tree, and porter's app under CliRunner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.resources import sample_tree_dir

IGNORED = shutil.ignore_patterns("__pycache__", "*.so")


def copy_sample_tree(dest: Path) -> Path:
    shutil.copytree(sample_tree_dir(), dest, ignore=IGNORED)
    return dest


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (but porter's own state and caches) -> its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".porter" not in p.parts and "__pycache__" not in p.parts and ".git" not in p.parts
    }


@pytest.fixture
def porter():
    """porter(*args) -> click Result (stdout, stderr and output kept apart)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], prog_name="porter")

    return run


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    return copy_sample_tree(tmp_path / "Megatron-DeepSpeed")


@pytest.fixture(scope="module")
def ported(tmp_path_factory) -> Path:
    """A sample tree with the llama port applied (read-only for the tests that share it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("ported") / "Megatron-DeepSpeed")
    result = CliRunner().invoke(app, ["apply", "llama", "--target", str(tree)])
    assert result.exit_code == 0, result.output
    return tree
