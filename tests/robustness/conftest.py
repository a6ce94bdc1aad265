"""Fixtures for the robustness suite: copies of the sample tree, a snapshot of every file,
and the CLI driven in-process (typer's CliRunner on porter.cli.app)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.resources import sample_tree_dir


def copy_sample(dest: Path) -> Path:
    shutil.copytree(sample_tree_dir(), dest, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dest


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: files by SHA-256 and mode, folders by mode, links by target."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as exc:
                    digest = f"unreadable: {exc.strerror}"
                out[rel] = ("file", digest, stat.S_IMODE(info.st_mode))
    return out


def diff_snapshots(before: dict, after: dict) -> list[str]:
    changes = []
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) != after.get(rel):
            changes.append(f"{rel}: {before.get(rel)} -> {after.get(rel)}")
    return changes


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
