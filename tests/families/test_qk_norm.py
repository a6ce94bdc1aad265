"""The query/key norm porter writes (megatron/model/qk_norm.py) against HF's own norms at TP=2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.training import SAMPLE_TREE, environment, free_port

GENERATED = Path(__file__).resolve().parents[2] / "generated" / "qwen3" / "megatron" / "model" / "qk_norm.py"


@pytest.mark.slow  # in the test command: qwen3, olmo2 and gemma3 verified at TP=2, and the per-rank norm broken on purpose
def test_qk_norm_at_tp2_is_hfs_qwen3_gemma3_and_olmo2_norm():
    """Per head: the weight's gradient summed over the ranks (their copies stay equal); over the whole
    projection: the mean of squares all-reduced, each rank holding its heads' slice of the weight."""
    worker = Path(__file__).with_name("qk_norm_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(worker), str(SAMPLE_TREE), str(GENERATED)]
    proc = subprocess.run(cmd, cwd=SAMPLE_TREE, env=environment(SAMPLE_TREE, 2), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "QKNORM-OK 0" in proc.stdout and "QKNORM-OK 1" in proc.stdout, out[-5000:]
