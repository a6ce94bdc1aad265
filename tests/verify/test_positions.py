"""Rotary positions as a model engineer checks them: explicit position ids honoured (plain and
pipe model, against HF given the same ids), and fp32 angles in a bf16 model."""

import json
import subprocess
import sys

from porter.catalog import load_spec
from porter.treerun.process import environment
from porter.verify.parity import VerifyOptions, verify

SPEC = load_spec("llama")


def test_reset_position_ids_are_honoured_like_hf(ported_tree, tmp_path):
    """Position ids restarting mid-row (--reset-position-ids): both models give HF's logits."""
    result = verify(SPEC, ported_tree, tmp_path, VerifyOptions(reset_positions=True))
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == ["LLaMAModel", "LLaMAModelPipe"]


def test_without_the_hand_over_the_rotary_embedding_differs(broken_copy, tmp_path):
    tree = broken_copy("megatron/model/language_model.py", [("        use_positions(position_ids)\n", "")])
    result = verify(SPEC, tree, tmp_path, VerifyOptions(reset_positions=True, kinds=("model",)))
    assert not result.passed
    assert result.results[0].first_divergence.name.endswith("attention.rotary_emb")


BF16_CHECK = '''
import argparse, json, torch
from megatron.model.module import Float16Module
from megatron.model.rotary_embedding import RotaryEmbedding

rotary = RotaryEmbedding(128, theta=10000.0)
Float16Module(rotary, argparse.Namespace(fp16=False, bf16=True))  # the tree's own cast: module.bfloat16()
q = torch.ones(1, 1, 1, 128, dtype=torch.bfloat16)
rotated, _ = rotary(q, q, offset=4095)
exact = RotaryEmbedding(128, theta=10000.0)
reference, _ = exact(q.float(), q.float(), offset=4095)
# what a bf16 inv_freq buffer gives (the cast the old port suffered)
angles = 4095 * exact.inv_freq.bfloat16().float()
drift = (angles - 4095 * exact.inv_freq).abs().max().item()
print(json.dumps({"dtype": str(rotary.inv_freq.dtype), "diff": (rotated.float() - reference).abs().max().item(),
                  "bf16_frequencies_drift": drift}))
'''


def test_angles_stay_fp32_when_the_tree_casts_the_model_to_bf16(ported_tree):
    done = subprocess.run([sys.executable, "-c", BF16_CHECK], cwd=ported_tree, env=environment(ported_tree),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["dtype"] == "torch.float32"
    assert seen["diff"] <= 2 ** -7 * 2  # bf16 rounding of the output only
    assert seen["bf16_frequencies_drift"] > 1.0  # radians: what the cast would have done
