"""Fixtures shared by the suites: the sample tree ported by porter itself, one smoke work folder."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.resources import sample_tree_dir


def copy_sample_tree(dest: Path) -> Path:
    shutil.copytree(sample_tree_dir(), dest, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dest


@pytest.fixture(scope="session")
def ported_tree(tmp_path_factory) -> Path:
    """The sample tree with `porter apply llama` applied (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("ported") / "Megatron-DeepSpeed")
    result = CliRunner().invoke(app, ["apply", "llama", "--target", str(tree)])
    assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def smoke_workdir(tmp_path_factory) -> Path:
    """One work folder for the smoke runs, so corpus, tokenizer and dataset are made once."""
    return tmp_path_factory.mktemp("smoke")
