"""The commands that only read and write source (list, inspect, diff, apply, revert, explain) do
not import torch: it is a second of start-up per command (bench/apply.py times `porter diff`),
and tensors move only in convert, verify and smoke."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import copy_sample_tree


def test_a_diff_of_the_sample_tree_runs_without_importing_torch(tmp_path):
    tree = copy_sample_tree(tmp_path / "Megatron-DeepSpeed")
    probe = ("import sys, runpy\n"
             f"sys.argv = ['porter', 'diff', 'llama', '--target', {str(tree)!r}, '--stat']\n"
             "try:\n    runpy.run_module('porter', run_name='__main__')\n"
             "except SystemExit as exit:\n    code = exit.code\n"
             "print('torch imported' if 'torch' in sys.modules else 'no torch', code)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    last = done.stdout.strip().splitlines()[-1]
    assert last == "no torch 1", (last, done.stderr[-2000:])  # exit status 1: changes to make
