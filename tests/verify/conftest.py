"""Fixtures of the verify/convert suite (the ported sample tree comes from tests/conftest.py)."""

from pathlib import Path

import pytest

from tests.helpers.trees import edited_copy


@pytest.fixture
def broken_copy(ported_tree, tmp_path):
    """broken_copy(file, [(old, new), ...]) -> a copy of the ported tree with those edits in file."""

    def _break(file: str, edits: list[tuple[str, str]]) -> Path:
        return edited_copy(ported_tree, tmp_path / "broken", *((file, old, new) for old, new in edits))

    return _break
