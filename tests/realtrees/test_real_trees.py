"""Opt-in: issue 13's acceptance on real Megatron-DeepSpeed trees, with porter's own commands.

Set PORTER_REAL_TREES to a folder holding the trees extracted at the commits of
the TREES.md beside them (labels ms-pre, ms-merge, ms-llama, ms-head, hab-pre, hab-llama, bs-head,
hmd-head, alcf-head, ollf-head, mast-head, dspin-head, llmjp-abci). Without it every test here skips (CI
has none). A tree that applies takes 3 to 5 minutes on 2 cores (20 training steps and both
verify classes).
"""

import pytest

from tests.realtrees.acceptance import TREES, run_acceptance
from tests.realtrees.trees import NEEDS_TREES, source_of

# Trees that import CUDA-only packages at start-up (apex): on a CPU machine smoke and verify
# must say so (exit status 2), and everything before them must pass.
NEEDS_CUDA = {"bs-head", "ms-llama"}

pytestmark = NEEDS_TREES


@pytest.mark.parametrize("label", TREES)
def test_llama_port_of_a_real_tree(label, tmp_path):
    result = run_acceptance(label, source_of(label), tmp_path)
    notes = "\n".join(result.notes)
    assert result.apply, notes
    assert result.idempotent, notes
    assert result.compiles, notes
    assert result.args, notes
    assert result.imports, notes
    assert result.reverts, notes
    if label in NEEDS_CUDA:
        assert result.needs_cuda, notes
    else:
        assert result.trains, notes
        assert result.last < result.first
        assert result.verifies, notes
        assert len(result.max_logit_diff) == 2 and all(d <= 1e-5 for d in result.max_logit_diff.values()), \
            result.max_logit_diff


# Sliding-window attention on a tree whose core attention porter keeps unfused: Habana's, in a
# helper method of its CoreAttention, with ALiBi beside the scores (issue 20).
WINDOWED = "hab-pre"


def test_phi3_sliding_window_port_of_a_habana_tree(tmp_path):
    result = run_acceptance(WINDOWED, source_of(WINDOWED), tmp_path, family="phi3")
    notes = "\n".join(result.notes)
    assert all((result.apply, result.idempotent, result.compiles, result.args, result.imports, result.reverts)), notes
    assert result.trains and result.last < result.first, notes
    assert result.verifies, notes
    assert len(result.max_logit_diff) == 2 and all(d <= 1e-5 for d in result.max_logit_diff.values()), \
        result.max_logit_diff


# Newer families on trees whose own code porter extends (issue 20): grouped-query attention where the
# tree's attention math is a module of its own (CoreAttention) or behind a key/value cache it sizes per
# query head, Gemma's GeGLU on the tree's own gated MLP chosen by an option's value (Habana's
# --activation-func-type list, BigScience's --glu-activation dict), a width given as a number against
# the tree's own width override; Gemma-3's local rotary base on the tree's own EleutherAI-shaped rotary
# embedding, built by each attention (Habana's CoreAttention, BigScience's ParallelAttention).
FAMILY_PORTS = [("qwen3", "hab-pre"), ("gemma", "ms-llama"), ("gemma2", "ms-llama"), ("gemma", "hab-llama"),
                ("gemma", "bs-head"), ("gemma3", "hab-llama"), ("gemma3", "bs-head")]


@pytest.mark.parametrize(("family", "label"), FAMILY_PORTS)
def test_family_port_of_a_real_tree(family, label, tmp_path):
    result = run_acceptance(label, source_of(label), tmp_path, family=family)
    notes = "\n".join(result.notes)
    assert result.apply and result.idempotent and result.compiles and result.reverts, notes
    if label == "bs-head":  # its training stack needs CUDA at start-up
        assert result.needs_cuda, notes
        return
    assert result.trains and result.last < result.first, notes
    assert len(result.max_logit_diff) == 2 and result.verifies, notes
