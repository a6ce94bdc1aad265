"""Fixtures of the LLaMA-port tests: a SentencePiece model (the ported tree is in tests/conftest.py)."""

from pathlib import Path

import pytest

from porter.corpus import train_sentencepiece, write_corpus


@pytest.fixture(scope="session")
def sentencepiece_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spm")
    text, _ = write_corpus(folder, max_bytes=100_000)
    return train_sentencepiece(text, folder / "spm", vocab_size=500)


def checksums(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
