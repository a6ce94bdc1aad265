"""Fixtures for the robustness suite: copies of the sample tree, a snapshot of every file,
and the CLI driven in-process (typer's CliRunner on porter.cli.app)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot

__all__ = ["copy_sample", "diff_snapshots", "snapshot"]


@pytest.fixture
def tree(tmp_path) -> Path:
    path = copy_sample(tmp_path / "tree")
    yield path
    for folder, dirs, _files in os.walk(tmp_path):  # let pytest clean up read-only folders
        for name in dirs:
            p = Path(folder) / name
            if not p.is_symlink():
                p.chmod(0o755)


@pytest.fixture
def cli():
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)

    return run
