"""All or nothing, under a lock: failures in the middle of a write leave the tree as it was,
and concurrent porter runs (real processes) never interleave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from porter.errors import PorterError
from porter.port import apply
from porter.revert import revert
from porter.writer import tree_lock
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot

REPO = Path(__file__).resolve().parents[2]


def _failing_replace(monkeypatch, fail_at: int, error: BaseException):
    """os.replace fails on its fail_at-th call (the disk, not porter, fails)."""
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise error
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("fail_at", [1, 2, 8, 15])
def test_a_failed_rename_puts_everything_back(tree, monkeypatch, fail_at):
    before = snapshot(tree)
    _failing_replace(monkeypatch, fail_at, OSError(28, "No space left on device"))
    with pytest.raises(PorterError) as info:
        apply("llama", tree)
    assert "put back" in info.value.fix
    monkeypatch.undo()
    assert not diff_snapshots(before, snapshot(tree))


def test_an_interrupt_in_the_middle_puts_everything_back(tree, monkeypatch):
    before = snapshot(tree)
    _failing_replace(monkeypatch, 6, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        apply("llama", tree)
    monkeypatch.undo()
    assert not diff_snapshots(before, snapshot(tree))


@pytest.mark.parametrize("fail_at", [1, 5, 14])
def test_a_failed_revert_puts_everything_back(tree, monkeypatch, fail_at):
    apply("llama", tree)
    ported = snapshot(tree)
    _failing_replace(monkeypatch, fail_at, OSError(5, "Input/output error"))
    with pytest.raises(PorterError):
        revert(tree)
    monkeypatch.undo()
    assert not diff_snapshots(ported, snapshot(tree))


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_a_held_lock_stops_another_process(tree):
    before = snapshot(tree)
    with tree_lock(tree):
        done = subprocess.run([sys.executable, "-m", "porter", "apply", "llama", "--target", str(tree)],
                              capture_output=True, text=True, env=_env())
        assert done.returncode == 2
        assert "another porter run" in done.stderr and f"process {os.getpid()}, still running" in done.stderr
        after = snapshot(tree)
    assert set(diff_snapshots(before, after)) == {
        f".porter: None -> {after['.porter']}", f".porter/lock: None -> {after['.porter/lock']}"
    }  # only this test's own lock
    assert not diff_snapshots(before, snapshot(tree))


def test_concurrent_runs_never_interleave(tmp_path):
    """Three real `porter apply` processes at once on one tree: one ports it; the others
    refuse (the lock) or find nothing to do. The tree equals a single apply's."""
    reference = copy_sample(tmp_path / "reference")
    apply("llama", reference)
    expected = {k: v for k, v in snapshot(reference).items() if k != ".porter/journal.json"}
    for round_ in range(2):
        tree = copy_sample(tmp_path / f"tree{round_}")
        procs = [
            subprocess.Popen([sys.executable, "-m", "porter", "apply", "llama", "--target", str(tree)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
            for _ in range(3)
        ]
        outcomes = [(p.wait(), *p.communicate()) for p in procs]
        ported = [o for o in outcomes if o[0] == 0 and "created pretrain_llama.py" in o[1]]
        others = [o for o in outcomes if o not in ported]
        assert len(ported) == 1, outcomes
        for code, out, err in others:
            assert (code == 2 and "another porter run" in err) or (code == 0 and "nothing to do" in out), (code, out, err)
        got = snapshot(tree)
        journal = json.loads((tree / ".porter/journal.json").read_text())
        assert len(journal["applies"]) == 1
        got.pop(".porter/journal.json")
        assert not diff_snapshots(expected, got)
