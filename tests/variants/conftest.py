"""One ported tree per variant (session-scoped: ported once, shared; tests must not modify it —
`copy_of` gives a test its own copy), and what the tests of every variant share."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from porter.port import Port, apply
from porter.spec import load_spec
from porter.verify.parity import VerifyResult
from tests.helpers.trees import snapshot
from tests.variants.variants import make_variant

LLAMA = load_spec("llama")


@dataclass
class Ported:
    """A variant of the sample tree after `porter apply llama`."""

    root: Path
    pristine: Path  # the variant before the port (a separate, untouched copy)
    before: dict  # snapshot of the variant before the port
    port: Port  # what the apply did

    @property
    def changed(self) -> set[str]:
        return {change.path for change in self.port.changes}


def _ported(factory, name: str) -> Ported:
    folder = factory.mktemp(name)
    pristine = make_variant(name, folder / "pristine")
    root = folder / "Megatron-DeepSpeed"
    shutil.copytree(pristine, root)
    before = snapshot(root)
    return Ported(root=root, pristine=pristine, before=before, port=apply(LLAMA, root))


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


def reapply_then_revert(ported: Ported, tmp_path: Path) -> None:
    """On a copy: a second `porter apply` changes nothing, and `porter revert` gives the variant
    back byte for byte (the tree's own files, porter's journal folder gone)."""
    from typer.testing import CliRunner

    from porter.cli import app
    from tests.helpers.trees import diff_snapshots

    tree = copy_of(ported, tmp_path / "Megatron-DeepSpeed")
    after = snapshot(tree)
    runner = CliRunner()
    again = runner.invoke(app, ["apply", "llama", "--target", str(tree)])
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output
    assert not diff_snapshots(after, snapshot(tree))
    reverted = runner.invoke(app, ["revert", "--target", str(tree)])
    assert reverted.exit_code == 0, reverted.output
    assert not diff_snapshots(ported.before, snapshot(tree))


def python_in_tree(root: Path, code: str, timeout: float = 120) -> str:
    """Run Python code with the tree as its working folder and first import path; -> stdout."""
    import os
    import subprocess
    import sys
    import textwrap

    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
