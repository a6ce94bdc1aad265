"""One ported tree per variant (session-scoped: ported once, shared; tests must not modify it —
`copy_of` gives a test its own copy), and what the tests of every variant share."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from porter.catalog import load_spec
from porter.port import Port, apply
from porter.verify.parity import VerifyResult
from tests.helpers.trees import snapshot
from tests.variants.variants import make_variant

LLAMA = load_spec("llama")
OLMO2 = load_spec("olmo2")


@dataclass
class Ported:
    """A variant of the sample tree after `porter apply llama` (or the family its fixture names)."""

    root: Path
    pristine: Path  # the variant before the port (a separate, untouched copy)
    before: dict  # snapshot of the variant before the port
    port: Port  # what the apply did

    @property
    def changed(self) -> set[str]:
        return {change.path for change in self.port.changes}


def _ported(factory, name: str, spec=LLAMA) -> Ported:
    folder = factory.mktemp(name)
    pristine = make_variant(name, folder / "pristine")
    root = folder / "Megatron-DeepSpeed"
    shutil.copytree(pristine, root)
    before = snapshot(root)
    return Ported(root=root, pristine=pristine, before=before, port=apply(spec, root))


def copy_of(ported: Ported, dest: Path) -> Path:
    """A copy of the ported tree a test may change (without the caches a verify run leaves)."""
    shutil.copytree(ported.root, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def passed(result: VerifyResult, classes: list[str]) -> dict[str, float]:
    """Assert a verify run passed for these classes; -> class -> max |logit - HF|."""
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure, r.as_dict()
        assert not [p for p in r.probes if p.diverges], r.as_dict()
    figures = {r.model_class: r.max_logit_diff for r in result.results}
    print(f"max |logit - HF|: {figures}")
    return figures


@pytest.fixture(scope="session")
def defaults_in_initialize_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "defaults_in_initialize")


@pytest.fixture(scope="session")
def own_llama_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "own_llama_files")


@pytest.fixture(scope="session")
def gate_second_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "glu_gate_second")


@pytest.fixture(scope="session")
def hand_port_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "hand_port_separate_gate")


@pytest.fixture(scope="session")
def extra_state_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "extra_state_linears")


def reapply_then_revert(ported: Ported, tmp_path: Path, model: str = "llama") -> None:
    """On a copy: a second `porter apply` changes nothing, and `porter revert` gives the variant
    back byte for byte (the tree's own files, porter's journal folder gone)."""
    from typer.testing import CliRunner

    from porter.cli import app
    from tests.helpers.trees import diff_snapshots

    tree = copy_of(ported, tmp_path / "Megatron-DeepSpeed")
    after = snapshot(tree)
    runner = CliRunner()
    again = runner.invoke(app, ["apply", model, "--target", str(tree)])
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output
    assert not diff_snapshots(after, snapshot(tree))
    reverted = runner.invoke(app, ["revert", "--target", str(tree)])
    assert reverted.exit_code == 0, reverted.output
    assert not diff_snapshots(ported.before, snapshot(tree))


def python_in_tree(root: Path, code: str, timeout: float = 120) -> str:
    """Run Python code with the tree as its working folder and first import path; -> stdout."""
    import subprocess
    import sys
    import textwrap

    from porter.treerun.process import environment

    # porter's run environment: a free port, DeepSpeed on the CPU, and its op cache for this Python (a shared
    # default cache is rebuilt, under a lock, whenever another environment builds there)
    env = {**environment(root), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# A tiny HF LLaMA for the conversions: 250 tokens, padded by the tree (so padding is exercised).
def tiny_hf(dest: Path) -> Path:
    from porter import convert
    from porter.verify.reference import TinyConfig, random_reference

    model = random_reference(LLAMA, TinyConfig(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=250,
                                               seq_length=16))
    return convert.write_hf(dest, model.config.to_dict(), model.state_dict())


def convert_round_trip(ported: Ported, hf_dir: Path, work: Path, tp: int) -> Path:
    """`porter convert hf-to-megatron --tp N`, then `porter convert megatron-to-hf`, as a user runs
    them; asserts the HF weights come back bit for bit. -> the checkpoint folder."""
    import torch
    from typer.testing import CliRunner

    from porter import convert
    from porter.cli import app

    runner = CliRunner()
    ckpt, again = work / f"ckpt-tp{tp}", work / f"hf-again-tp{tp}"
    there = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf_dir), "--out", str(ckpt),
                                "--target", str(ported.root), "--tp", str(tp)])
    assert there.exit_code == 0, there.output
    back = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(again),
                               "--target", str(ported.root)])
    assert back.exit_code == 0, back.output
    (_, state), (_, state_again) = convert.read_hf(hf_dir), convert.read_hf(again)
    assert sorted(state) == sorted(state_again)
    for key in state:
        assert state[key].dtype == state_again[key].dtype and torch.equal(state[key], state_again[key]), key
    return ckpt


def first_layer_shards(ckpt: Path, layout, tp: int) -> list[dict]:
    """The first transformer layer's tensors in each tensor-parallel shard of a pipe checkpoint."""
    import torch

    fc1 = f"{layout.mlp}.{layout.fc1}.weight"
    shards = []
    for rank in range(tp):
        files = sorted(ckpt.glob(f"*/layer_*-model_{rank:02d}-model_states.pt"))
        layers = [s for s in (torch.load(f, map_location="cpu", weights_only=False) for f in files) if fc1 in s]
        assert layers, f"no layer with {fc1} in {ckpt}"
        shards.append(layers[0])
    return shards


@pytest.fixture(scope="session")
def own_swiglu_gemma_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "own_swiglu_flag", load_spec("gemma"))


@pytest.fixture(scope="session")
def separate_gate_gemma_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "hand_port_separate_gate", load_spec("gemma"))


@pytest.fixture(scope="session")
def gate_second_gemma_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "glu_gate_second", load_spec("gemma"))


@pytest.fixture(scope="session")
def rmsnorm_apex_only_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "rmsnorm_apex_only")


@pytest.fixture(scope="session")
def apex_at_startup_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "apex_at_startup")


@pytest.fixture(scope="session")
def own_rmsnorm_apex_fallback_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "own_rmsnorm_apex_fallback")


@pytest.fixture(scope="session")
def blocked_qkv_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "blocked_qkv_thirds")


@pytest.fixture(scope="session")
def norm_type_branches_olmo2_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "norm_type_branches", OLMO2)


@pytest.fixture(scope="session")
def norm_type_branches_gemma_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "norm_type_branches", load_spec("gemma"))


@pytest.fixture(scope="session")
def own_bias_switch_qwen2_tree(tmp_path_factory) -> Ported:
    return _ported(tmp_path_factory, "own_bias_switch", load_spec("qwen2"))
