"""Fixtures shared by the suites: the sample tree ported by porter itself, one smoke work folder."""

import os

# One thread per process: the suite runs a worker per core (-n auto), and most tests start tree
# processes of their own; OpenMP threads beyond the cores spin against each other (a third of the
# suite's CPU time on 2 cores). Set before torch is imported here or in a run's environment
# (porter.treerun.process.environment keeps a value it is given).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import shutil
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

from porter.cli import app
from porter.resources import sample_tree_dir

# Property tests draw the same examples on every run (CI included), so a run is reproducible and a
# red CI is never a new draw; HYPOTHESIS_PROFILE=explore draws new examples each run.
settings.register_profile("porter", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "porter"))


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
