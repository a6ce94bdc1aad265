"""Opt-in: Phi-3.5's longrope on a real tree's own rotary embedding (rope_scaling/tree_scaling.py).

microsoft's RotaryEmbedding (a hard-coded base, angles handed to apply_rotary_pos_emb,
which computes cos and sin) gets the scaled frequencies and the attention factor; the port is
verified against HF at both sides of Phi-3.5's original context of 4096 (32 positions: the short
factors; 4100: the long ones) and reverted byte for byte. Set PORTER_REAL_TREES
(tests/realtrees/test_real_trees.py); without it this skips. It takes about 3 minutes on 2 cores.
"""

import json
import shutil

import pytest

from tests.realtrees.acceptance import porter, snapshot, user_environment
from tests.realtrees.trees import NEEDS_TREES, copy_of

LABEL = "dspin-head"  # `10000 ** (...)` in RotaryEmbedding.__init__, a saved inv_freq, the pipe's table in pretrain_gpt.py
ORIGINAL = 4096  # Phi-3.5's original_max_position_embeddings

pytestmark = NEEDS_TREES


def test_phi3_5s_longrope_on_a_trees_own_rotary_matches_hf_at_both_lengths(tmp_path):
    copy = copy_of(LABEL, tmp_path / LABEL)
    original = snapshot(copy)
    env = user_environment()
    applied = porter(["apply", "phi3_5", "--target", str(copy)], env)
    assert applied.returncode == 0, applied.stderr
    assert (copy / "megatron/model/rope_scaling.py").is_file()
    for seq, batch in ((32, 2), (ORIGINAL + 4, 1)):
        done = porter(["verify", "phi3_5", "--target", str(copy), "--seq", str(seq), "--batch", str(batch), "--json"],
                      env)
        doc = json.loads(done.stdout)
        assert done.returncode == 0 and doc["passed"], (seq, done.stderr[-3000:])
        assert len(doc["results"]) == 2 and all(r["max_abs_logit_diff"] <= 1e-5 for r in doc["results"]), doc
    reverted = porter(["revert", "--target", str(copy)], env)
    assert reverted.returncode == 0, reverted.stderr
    for cache in copy.rglob("__pycache__"):
        shutil.rmtree(cache)
    assert snapshot(copy) == {k: v for k, v in original.items() if "__pycache__" not in k}


@pytest.mark.parametrize("label", ["ms-head", "hab-llama"])  # angles handed on; EleutherAI's cached table
def test_local_layers_unscaled_beside_yarn_global_ones_each_take_their_own_factor(tmp_path, label):
    """gemma-3-1b-pt's config with yarn on its global layers: the local layers' own rotary is
    unscaled, and each layer's cos and sin take its own embedding's attention factor (the factor
    of the embedding built last reached every layer: the global layer failed at 0.6 in the Model,
    the local ones at 0.66 in the Pipe). verify runs 6 layers, the 6th global."""
    from tests.families.battery import published

    config = {**published("google--gemma-3-1b-pt"),
              "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    folder = tmp_path / "gemma-3-yarn"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    copy = copy_of(label, tmp_path / label)
    env = user_environment()
    applied = porter(["apply", str(folder), "--target", str(copy)], env)
    assert applied.returncode == 0, applied.stderr
    done = porter(["verify", str(folder), "--target", str(copy), "--json"], env)
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["passed"], done.stderr[-3000:]
    assert len(doc["results"]) == 2 and all(r["max_abs_logit_diff"] <= 1e-5 for r in doc["results"]), doc
