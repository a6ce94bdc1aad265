"""`porter smoke` as a user runs it: options checked first, the tree never written, failures named.

Real runs of the ported sample tree (DeepSpeed on the CPU); the failing ones are made by
damaging a copy of the port the way a user's tree can be damaged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from tests.conftest import copy_sample_tree


def porter(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="porter")


def every_file(root: Path) -> dict[str, str]:
    """Every file under root, caches and porter's journal included -> its hash."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("model, options, message", [
    ("llama", ["--steps", "3"], "porter smoke cannot run with --steps 3"),
    ("llama", ["--nproc", "3", "--pp", "2"], "porter smoke cannot run with --nproc 3 --tp 1 --pp 2"),
    ("llama", ["--nproc", "2", "--tp", "3"], "--nproc a multiple of --tp x --pp"),
    ("llama", ["--nproc", "2", "--zero-stage", "3"], "DeepSpeed's pipeline engine takes ZeRO stages 0 and 1 only"),
    # a mixture of experts trains on the plain engine only (the pipe model carries no MoE layer)
    ("mixtral", ["--nproc", "2", "--pp", "2"], "experts: the model trains on DeepSpeed's plain engine only"),
])
def test_bad_options_are_refused_before_anything_runs(ported_tree, temp_dir, model, options, message):
    result = porter("smoke", model, "--target", ported_tree, *options)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "fix:        pass --" in result.stderr
    assert "step 1/" not in result.output and "FAILED" not in result.output
    assert list(temp_dir.iterdir()) == []  # no work folder, no run


def test_smoke_trains_a_scratch_copy_and_revert_gives_the_tree_back_byte_for_byte(tmp_path, temp_dir, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # a user's Python writes __pycache__
    tree = copy_sample_tree(tmp_path / "Megatron-DeepSpeed")
    before = every_file(tree)
    assert porter("apply", "llama", "--target", tree).exit_code == 0
    ported = every_file(tree)

    result = porter("smoke", "llama", "--target", tree, "--steps", "10")
    assert result.exit_code == 0, result.output[-3000:]
    assert result.stdout.splitlines()[-1].startswith("smoke passed: mean loss of the first 5 steps")
    assert every_file(tree) == ported  # nothing written in the tree: no __pycache__, no build output
    assert list(temp_dir.iterdir()) == []  # the work folder of a passing run is removed

    assert porter("revert", "--target", tree).exit_code == 0
    assert every_file(tree) == before


def test_a_failed_smoke_says_what_failed_and_keeps_its_named_work_folder(damaged_port, temp_dir):
    tree = damaged_port("megatron/model/llama_model.py", "        super().__init__(layers=self.specs,",
                        "        raise RuntimeError('a damaged port')\n        super().__init__(layers=self.specs,")
    result = porter("smoke", "llama", "--target", tree, "--steps", "10")
    assert result.exit_code == 1
    assert ("smoke FAILED: the training run stopped (exit status 1) after 0 steps: RuntimeError: a damaged port "
            "(at megatron/model/llama_model.py:") in result.stdout
    assert "0.0000" not in result.output
    kept = list(temp_dir.iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("porter-smoke-Megatron-DeepSpeed-")
    assert f"work folder kept for the failure: {kept[0]}" in result.stdout
    assert f"log: {kept[0] / 'train.log'}" in result.stdout
    assert "RuntimeError: a damaged port" in (kept[0] / "train.log").read_text()
    assert (kept[0] / "tree" / "pretrain_llama.py").is_file()  # the scratch copy, to rerun the command


def test_a_package_the_tree_imports_and_the_environment_lacks_is_exit_2_naming_its_use(damaged_port, temp_dir):
    """A package porter knows no pip line for: said so, with what the tree uses it for (a PyPI
    project of that name may be another one); a known one gets its pip line (test_treefailure)."""
    tree = damaged_port("megatron/__init__.py", "\n", "\nimport porter_absent_package_xyz\nporter_absent_package_xyz.setup()\n")
    result = porter("smoke", "llama", "--target", tree)
    assert result.exit_code == 2
    assert "the environment lacks the Python package 'porter_absent_package_xyz'" in result.stderr
    assert "the port is not at fault" in result.stderr and "porter cannot tell which pip package provides it" in result.stderr
    assert "the tree uses it for: setup" in result.stderr
    assert "pip install porter_absent_package_xyz" not in result.stderr
    assert "file:       megatron/__init__.py:" in result.stderr
    assert "fix the port" not in result.output


def test_a_tree_that_asserts_cuda_at_start_up_needs_cuda(damaged_port, temp_dir):
    tree = damaged_port("pretrain_llama.py", "\ndef llama_defaults(parser):",
                        "\nassert torch.cuda.is_available(), 'this tree runs on GPUs'\n\n\ndef llama_defaults(parser):")
    result = porter("smoke", "llama", "--target", tree)
    assert result.exit_code == 2
    assert "porter: error: this tree needs CUDA: it requires CUDA at start-up, and this machine has none" in result.stderr
    assert "file:       pretrain_llama.py:" in result.stderr
    assert "AssertionError: this tree runs on GPUs" in result.stderr


def test_no_cpu_on_a_machine_without_cuda_is_refused(ported_tree, temp_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = porter("smoke", "llama", "--target", ported_tree, "--no-cpu")
    assert result.exit_code == 2
    assert "--no-cpu runs the tree on this machine's CUDA device, and it has none" in result.stderr
    assert list(temp_dir.iterdir()) == []
