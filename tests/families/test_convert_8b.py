"""An 8B-shaped model (Llama-3.1-8B's shapes, 16 GB of bf16) converted both ways on a 24 GB
machine, in processes of their own, and checked bit for bit, tensor by tensor, never loading
either side whole. Slow and disk-hungry (32 GB at a time): outside the default test command
(`pytest -m slow tests/families/test_convert_8b.py -s` prints the figures)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers.synthetic_llama import differs_from_synthetic, write_model

pytestmark = pytest.mark.slow


def _convert(*args) -> dict:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "porter", "convert", *[str(a) for a in args], "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {**json.loads(done.stdout), "wall": round(time.monotonic() - start, 1)}


def test_an_8b_model_converts_both_ways_bit_exact(families_tree, tmp_path):
    if shutil.disk_usage(tmp_path).free < 36e9:
        pytest.skip("needs 36 GB of free disk")
    hf, ckpt, back = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "back"
    write_model(hf, "8B")
    os.sync()
    there = _convert("hf-to-megatron", "--hf", hf, "--out", ckpt, "--model", "llama3", "--target", families_tree,
                     "--tp", "2", "--pp", "2")
    shutil.rmtree(hf)  # the way back is checked against the model made again, tensor by tensor
    os.sync()
    again = _convert("megatron-to-hf", "--load", ckpt, "--out", back, "--model", "llama3", "--target", families_tree)
    shutil.rmtree(ckpt)
    for name, figures in (("hf-to-megatron --tp 2 --pp 2", there), ("megatron-to-hf", again)):
        print(f"8B {name}: {figures['bytes_read'] / 1e9:.2f} GB read, {figures['bytes_written'] / 1e9:.2f} GB "
              f"written, {figures['wall']} s (in-process {figures['seconds']} s), "
              f"peak memory {figures['peak_bytes'] / 1e9:.2f} GB")
    assert there["bytes_read"] > 16e9 and again["bytes_written"] > 16e9
    assert differs_from_synthetic(back, "8B") == []
    assert len(list(back.glob("model-*-of-*.safetensors"))) == 4  # 16 GB in shards of at most 5 GB
