"""porter smoke and porter demo: real training runs, progress, --json, --quiet, --verbose."""

from __future__ import annotations

import json
import re

import pytest


# the test command runs docs/ci.md's `porter smoke llama --json > smoke.json` and reads it back
@pytest.mark.slow
def test_smoke_json_reports_the_run_and_progress_goes_to_stderr(porter, ported, smoke_workdir):
    result = porter("smoke", "llama", "--target", ported, "--steps", "10", "--workdir", smoke_workdir, "--json", "-v")
    assert result.exit_code == 0, result.output[-3000:]
    doc = json.loads(result.stdout)  # stdout holds the document alone
    assert doc["schema"] == "porter.smoke/1" and doc["passed"] is True
    assert len(doc["losses"]) == 10 and doc["last5_mean"] < doc["first5_mean"]
    assert doc["config"] == {"steps": 10, "nproc": 1, "pp": 1, "tp": 1, "pipe": True, "zero_stage": 0}
    # not a terminal: one plain line per step, with the loss the document has
    steps = re.findall(r"^step (\d+)/10  loss ([0-9.]+)$", result.stderr, flags=re.M)
    assert [int(s) for s, _ in steps] == list(range(1, 11))
    assert [round(x, 4) for x in doc["losses"]] == [float(loss) for _, loss in steps]
    assert "| " in result.stderr and "lm loss" in result.stderr  # --verbose: the training log


def test_smoke_quiet_prints_nothing_when_it_passes(porter, ported, smoke_workdir):
    result = porter("smoke", "llama", "--target", ported, "--steps", "10", "--workdir", smoke_workdir, "-q")
    assert (result.exit_code, result.output) == (0, "")


def test_smoke_of_a_tree_without_the_port_is_status_2(porter, pristine, smoke_workdir):
    result = porter("smoke", "llama", "--target", pristine, "--workdir", smoke_workdir)
    assert result.exit_code == 2
    assert "pretrain_llama.py is missing: the tree is not ported" in result.stderr
    assert f"porter apply llama --target {pristine}" in result.stderr


def test_smoke_on_a_terminal_draws_a_progress_bar(porter, ported, smoke_workdir, monkeypatch):
    import porter.cli.common as common

    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    result = porter("smoke", "llama", "--target", ported, "--steps", "10", "--workdir", smoke_workdir)
    assert result.exit_code == 0
    assert "10/10" in result.stderr and "loss" in result.stderr  # the bar's last state
    assert not re.search(r"^step 1/10  loss", result.stdout + result.stderr, flags=re.M)  # no plain lines
    assert result.stdout.startswith("smoke passed: mean loss of the first 5 steps")


# the test command runs README's `porter demo` and its `porter explain` hint against their transcripts
@pytest.mark.slow
def test_demo_ports_and_trains_the_sample_tree(porter, tmp_path):
    result = porter("demo", "--folder", tmp_path / "demo", "--steps", "10")
    assert result.exit_code == 0, result.output[-3000:]
    out = result.stdout
    tree = tmp_path / "demo" / "Megatron-DeepSpeed"
    assert out.startswith(f"1. copied the bundled sample tree to {tree} ({tmp_path / 'demo'}/ ignores itself for git")
    assert re.search(r"^   created pretrain_llama.py \(\+\d+ -0\)$", out, flags=re.M)
    assert len(re.findall(r"^   step \d+/10  loss [0-9.]+$", out, flags=re.M)) == 10
    assert "done: the llama port of the sample tree trains" in out
    hint = re.search(r"^Which spec key wrote a line\? porter explain (\S+)$", out, flags=re.M).group(1)
    explained = porter("explain", hint)
    assert explained.exit_code == 0 and "written by porter: apply 1 of llama" in explained.stdout
    assert explained.stdout.splitlines()[0].split(": ", 1)[1].strip()  # a line of code, not a blank one
    assert "  spec key: " in explained.stdout
