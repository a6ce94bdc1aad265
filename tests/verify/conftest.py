"""Fixtures of the verify/convert suite: the sample tree ported by porter itself."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.resources import sample_tree_dir


def port_copy(folder: Path) -> Path:
    """A fresh copy of the bundled sample tree with `porter apply llama` run on it."""
    shutil.copytree(sample_tree_dir(), folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    done = CliRunner().invoke(app, ["apply", "llama", "--target", str(folder)])
    assert done.exit_code == 0, done.output
    return folder


@pytest.fixture(scope="session")
def ported_tree(tmp_path_factory) -> Path:
    return port_copy(tmp_path_factory.mktemp("ported") / "Megatron-DeepSpeed")


@pytest.fixture
def broken_copy(ported_tree, tmp_path):
    """broken_copy(file, [(old, new), ...]) -> a copy of the ported tree with those edits in file."""

    def _break(file: str, edits: list[tuple[str, str]]) -> Path:
        folder = tmp_path / "broken"
        shutil.copytree(ported_tree, folder, ignore=shutil.ignore_patterns("__pycache__"))
        path = folder / file
        text = path.read_text()
        for old, new in edits:
            assert text.count(old) == 1, f"{old!r} is not once in {file}"
            text = text.replace(old, new)
        path.write_text(text)
        return folder

    return _break
