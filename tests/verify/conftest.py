"""Fixtures of the verify/convert suite (the ported sample tree comes from tests/conftest.py)."""

import shutil
from pathlib import Path

import pytest


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
