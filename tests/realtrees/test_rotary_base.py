"""Opt-in: the base switch porter gives a real tree's own rotary embedding, one family per shape.

A tree whose RotaryEmbedding raises a hard-coded 10000 (microsoft mid-2023 and its forks) gets
a `theta` parameter; one whose class takes `base=` (EleutherAI's, Habana's) gets it passed. Each is ported with a family whose base is not 10000 (Qwen3 1e6, OLMo-2 5e5), verified
against HF (both generated classes: the pipe builds its own rotary table) and reverted byte for
byte. Set PORTER_REAL_TREES (tests/realtrees/test_real_trees.py); without it these skip.
A case takes about 2 minutes on 2 cores.
"""

import shutil

import pytest

from tests.realtrees.acceptance import Acceptance, check_verify, porter, snapshot, user_environment
from tests.realtrees.trees import NEEDS_TREES, copy_of

CASES = [("ms-llama", "olmo2"),  # `10000 ** (...)` in RotaryEmbedding.__init__: porter adds theta
         ("hab-llama", "qwen3")]  # `def __init__(self, dim, base=10000, ...)`: porter passes base

pytestmark = NEEDS_TREES


@pytest.mark.parametrize("label, family", CASES)
def test_a_trees_own_rotary_takes_the_familys_base(label, family, tmp_path):
    copy = copy_of(label, tmp_path / label)
    original = snapshot(copy)
    env = user_environment()
    applied = porter(["apply", family, "--target", str(copy)], env)
    assert applied.returncode == 0, applied.stderr
    assert "--rope-theta" in (copy / "megatron/arguments.py").read_text()
    result = Acceptance(label)
    check_verify(copy, env, result, family)
    assert result.verifies, result.notes
    assert len(result.max_logit_diff) == 2 and all(d <= 1e-5 for d in result.max_logit_diff.values())
    reverted = porter(["revert", "--target", str(copy)], env)
    assert reverted.returncode == 0, reverted.stderr
    for cache in copy.rglob("__pycache__"):
        shutil.rmtree(cache)
    assert snapshot(copy) == {k: v for k, v in original.items() if "__pycache__" not in k}
