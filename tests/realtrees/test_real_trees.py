"""Opt-in: issue 4's acceptance on real Megatron-DeepSpeed trees.

Set PORTER_REAL_TREES to a folder holding the trees extracted at the commits of issue 4,
named ms-pre (microsoft f01c9e6e), ms-head (microsoft f4157bea), hab-pre (Habana
Model-References 9da6581a, its Megatron-DeepSpeed folder) and bs-head (bigscience 8387ae17).
Without it every test here skips (CI has none). About 30 s a tree, 2 minutes in all.
"""

import os
from pathlib import Path

import pytest

from tests.realtrees.acceptance import TRAINS, TREES, run_acceptance

ROOT = os.environ.get("PORTER_REAL_TREES")

pytestmark = [
    pytest.mark.realtrees,
    pytest.mark.skipif(not ROOT, reason="PORTER_REAL_TREES is not set"),
]


@pytest.mark.parametrize("label", TREES)
def test_llama_port_of_a_real_tree(label, tmp_path):
    source = Path(ROOT or ".") / label
    if not source.is_dir():
        pytest.skip(f"{source} is missing")
    result = run_acceptance(label, source, tmp_path)
    notes = "\n".join(result.notes)
    assert result.apply, notes
    assert result.idempotent, notes
    assert result.compiles, notes
    assert result.args, notes
    assert result.imports, notes
    if label in TRAINS:
        assert result.trains, notes
        assert result.last < result.first
        assert result.verifies, notes
        assert all(diff <= 1e-5 for diff in result.max_logit_diff.values()), result.max_logit_diff
    else:
        assert result.trains is None
