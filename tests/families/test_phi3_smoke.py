"""`porter smoke` for Phi-3 and Phi-3.5 on the sample tree: they train and the loss falls, on the
pipeline engine and the plain one, with the window shorter than the sequence (16 of 64 positions)
and Phi-3.5's longrope lists taken at the smoke model's head size; and `porter diff --stat` names
every spec key the two ports bring (longrope's lists, the fused HF weights that change no line)."""

import json

import pytest
from typer.testing import CliRunner

from porter.cli import app
from tests.conftest import copy_sample_tree


def smoke(tree, workdir, family, *more):
    done = CliRunner().invoke(app, ["smoke", family, "--target", str(tree), "--steps", "10",
                                    "--workdir", str(workdir), "--json", *more])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    log = (workdir / "train.log").read_text().split("\n\n", 1)[0]
    assert "--sliding-window 16" in log and "--seq-length 64" in log
    if family == "phi3_5":
        assert "--rope-scaling-type" not in log  # the entry point's own default: longrope
        assert "--rope-scaling-short-factor 1.0 1.0499999523162842 " in log  # 8 of the 48, at head size 16
    print(f"smoke {family} {' '.join(more) or 'pipe'}: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
    return doc


@pytest.mark.parametrize(("family", "more"), [
    ("phi3", ()), ("phi3", ("--no-pipe",)), pytest.param("phi3_5", (), marks=pytest.mark.slow), ("phi3_5", ("--no-pipe",)),
], ids=["phi3-pipe", "phi3-plain", "phi3_5-pipe", "phi3_5-plain"])
def test_phi3_and_phi3_5_train(phi3_tree, smoke_workdir, family, more):
    smoke(phi3_tree, smoke_workdir, family, *more)


def test_diff_stat_names_every_new_spec_key(tmp_path):
    tree = copy_sample_tree(tmp_path / "Megatron-DeepSpeed")
    done = CliRunner().invoke(app, ["diff", "phi3_5", "--target", str(tree), "--stat"])
    assert done.exit_code == 1, done.output
    for key in ("position_embedding.rope_scaling.short_factor", "position_embedding.rope_scaling.long_factor",
                "position_embedding.rope_scaling.attention_factor", "attention.sliding_window"):
        assert key in done.stdout, key
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("hf_fused_weights:"))
    assert "no line in the tree" in line and "hf_weights.fused_qkv, hf_weights.fused_gate_up" in line


@pytest.mark.parametrize(("family", "keys"), [
    ("qwen3", ("attention.qk_norm",)),
    ("olmo2", ("attention.qk_norm", "norm.placement")),
    ("gemma2", ("norm.placement", "attention.softcap", "logits.softcap", "attention.query_pre_attn_scalar",
                "attention.sliding_window", "attention.sliding_window_pattern")),
    ("gemma3", ("attention.qk_norm", "norm.placement", "attention.query_pre_attn_scalar",
                "position_embedding.local_rope_theta", "attention.sliding_window", "attention.sliding_window_pattern")),
])
def test_diff_stat_names_the_new_spec_keys_of_every_dense_family(tmp_path, family, keys):
    tree = copy_sample_tree(tmp_path / "Megatron-DeepSpeed")
    done = CliRunner().invoke(app, ["diff", family, "--target", str(tree), "--stat"])
    assert done.exit_code == 1, done.output
    for key in keys:
        assert key in done.stdout, (key, done.stdout)
