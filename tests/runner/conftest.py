"""Fixtures for the runner suite: child processes with porter's stand-ins, a ported tree to damage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from porter.treerun.process import environment
from porter.treerun.standins import ENV_NAMES, ENV_REPORT


def run_with_standins(code: str, names: list[str], tmp_path: Path, extra_path: list[Path] = ()) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `code` in a child Python that installs the named stand-ins first (as porter's runs do).

    Returns the finished process and the names of the stand-ins that reported acting.
    """
    report = tmp_path / "standins.txt"
    report.unlink(missing_ok=True)
    env = environment(tmp_path, 1)
    env[ENV_NAMES] = ",".join(names)
    env[ENV_REPORT] = str(report)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), env["PYTHONPATH"]])
    script = tmp_path / "child.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, "-m", "porter.treerun.standins.launch", str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    return done, report.read_text().splitlines() if report.exists() else []


@pytest.fixture
def damaged_port(ported_tree: Path, tmp_path: Path):
    """damaged_port(path, before, after) -> a copy of the ported sample tree with one line changed."""

    def make(path: str, before: str, after: str) -> Path:
        tree = tmp_path / "Megatron-DeepSpeed"
        shutil.copytree(ported_tree, tree)
        file = tree / path
        text = file.read_text()
        assert before in text, f"{before!r} not in {path}"
        file.write_text(text.replace(before, after, 1))
        return tree

    return make


@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """The temporary folder porter's work folders go to, empty at the start."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder
