"""The sample tree stands in for microsoft/Megatron-DeepSpeed f01c9e6e: the same rewrites must
fire in both, at the same files. Needs PORTER_REAL_TREES=<folder with ms-pre/>; skips without."""

import os
from pathlib import Path

import pytest

from porter.port import prepare
from porter.resources import sample_tree_dir

REAL = os.environ.get("PORTER_REAL_TREES")


def fired(target) -> set[tuple[str, str]]:
    """(file, 'feature: edit') for every edit that changed a line."""
    port = prepare("llama", target)
    return {(c.path, tag) for c in port.changes for tag in set(c.provenance) if tag}


@pytest.mark.skipif(not REAL or not (Path(REAL or ".") / "ms-pre").is_dir(), reason="needs PORTER_REAL_TREES with ms-pre/")
def test_same_rewrites_fire_in_the_sample_tree_and_microsoft_f01c9e6e():
    sample, real = fired(sample_tree_dir()), fired(Path(REAL) / "ms-pre")
    assert sample == real, {"only in the sample tree": sorted(sample - real), "only in ms-pre": sorted(real - sample)}
