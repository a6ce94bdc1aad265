"""Tensor-parallel layers of the sample tree at TP=2 equal plain PyTorch."""

import subprocess
import sys
from pathlib import Path

from tests.helpers.training import SAMPLE_TREE, environment, free_port


def test_mpu_tp2_matches_single_device():
    worker = Path(__file__).with_name('mpu_worker.py')
    port = free_port()
    env = environment(SAMPLE_TREE, 2)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
           '2', '--master_addr', '127.0.0.1', '--master_port', str(port),
           str(worker), str(SAMPLE_TREE)]
    proc = subprocess.run(cmd, cwd=SAMPLE_TREE, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'MPU-OK 0' in proc.stdout and 'MPU-OK 1' in proc.stdout, out[-5000:]
