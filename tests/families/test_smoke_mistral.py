"""`porter smoke mistral` on the sample tree: it trains, with its window shorter than the sequence
(16 of 64 positions, the spec's 4096 at the smoke size), and the loss falls; `porter smoke qwen2`
trains with a tokenizer.json smoke trains for it."""

import json

import pytest
from typer.testing import CliRunner

from porter.cli import app


def smoke(tree, workdir, *more):
    done = CliRunner().invoke(app, ["smoke", "mistral", "--target", str(tree), "--steps", "10",
                                    "--workdir", str(workdir), "--json", *more])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    log = (workdir / "train.log").read_text().split("\n\n", 1)[0]
    assert "--sliding-window 16" in log and "--num-key-value-heads 2" in log and "--seq-length 64" in log
    print(f"smoke mistral {' '.join(more) or 'pipe'}: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
    return doc


@pytest.mark.slow  # in the test command: Gemma-2's and Gemma-3's smokes train windowed layers on both engines
def test_mistral_trains_with_its_window(mistral_qwen2_tree, smoke_workdir):
    smoke(mistral_qwen2_tree, smoke_workdir)


@pytest.mark.slow
@pytest.mark.parametrize("more", [("--no-pipe",), ("--nproc", "2", "--pp", "2")], ids=["plain", "pp2"])
def test_mistral_trains_on_the_plain_engine_and_over_two_stages(mistral_qwen2_tree, smoke_workdir, more):
    smoke(mistral_qwen2_tree, smoke_workdir, *more)


@pytest.mark.slow  # in the test command: Qwen3's smokes train with a tokenizer.json (TokenizerJson) on both engines
def test_qwen2_trains_with_its_tokenizer_json(mistral_qwen2_tree, smoke_workdir):
    done = CliRunner().invoke(app, ["smoke", "qwen2", "--target", str(mistral_qwen2_tree), "--steps", "10",
                                    "--workdir", str(smoke_workdir), "--json"])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    assert "--tokenizer-type TokenizerJson" in (smoke_workdir / "train.log").read_text().split("\n\n", 1)[0]
