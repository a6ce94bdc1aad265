"""The LLaMA port of the sample tree: idempotence, refusal, and none of the hand port's bugs.

The hand port that inspired porter (Habana's 2023 LLaMA) shipped with: a gate layer that kept
its bias under --no-bias; an untied output projection missing from the non-pipe checkpoint;
ffn 10922 instead of 11008; a tokenizer choice with no code behind it; weight decay on
RMSNorm weights. Each has a test here, run on the ported tree's real code.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.treerun.process import environment
from tests.conftest import copy_sample_tree
from tests.port.conftest import checksums

WORKER = Path(__file__).with_name("llama_worker.py")
TINY = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "16",
        "--micro-batch-size", "2", "--distributed-backend", "gloo"]


def run_worker(tree: Path, check: str, args: list[str]) -> dict:
    done = subprocess.run([sys.executable, str(WORKER), check, "--", *args], cwd=tree,
                          env=environment(tree, 1), capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_apply_twice_changes_nothing(tmp_path):
    tree = copy_sample_tree(tmp_path / "tree")
    runner = CliRunner()
    first = runner.invoke(app, ["apply", "llama", "--target", str(tree)])
    assert first.exit_code == 0, first.output
    assert "created megatron/model/llama_model.py" in first.output
    before = checksums(tree)
    second = runner.invoke(app, ["apply", "llama", "--target", str(tree)])
    assert second.exit_code == 0, second.output
    assert "nothing to do" in second.output
    assert checksums(tree) == before
    again = runner.invoke(app, ["diff", "llama", "--target", str(tree)])
    assert again.exit_code == 0 and again.output == ""


def test_missing_anchor_refuses_and_writes_nothing(tmp_path):
    tree = copy_sample_tree(tmp_path / "tree")
    transformer = tree / "megatron/model/transformer.py"
    transformer.write_text(transformer.read_text().replace("class ParallelMLP(", "class FeedForward("))
    before = checksums(tree)
    result = CliRunner().invoke(app, ["apply", "llama", "--target", str(tree)])
    assert result.exit_code == 2
    assert "megatron/model/transformer.py" in result.output
    assert "ParallelMLP" in result.output and "FeedForward" in result.output
    assert "Traceback" not in result.output
    assert checksums(tree) == before


def test_diff_is_exactly_what_apply_writes(tmp_path, ported_tree):
    tree = copy_sample_tree(tmp_path / "tree")
    result = CliRunner().invoke(app, ["diff", "llama", "--target", str(tree)])
    assert result.exit_code == 1
    patch = tmp_path / "port.patch"
    patch.write_text(result.output)
    subprocess.run(["git", "apply", "--unidiff-zero", str(patch)], cwd=tree, check=True)
    expected = {k: v for k, v in checksums(ported_tree).items() if not k.startswith((".porter", "__pycache__"))
                and "__pycache__" not in k and not k.endswith(".so")}
    got = {k: v for k, v in checksums(tree).items() if "__pycache__" not in k}
    assert got == expected


def test_ffn_is_llamas_11008_and_explicit_size_wins(ported_tree, sentencepiece_model):
    tok = ["--tokenizer-model", str(sentencepiece_model)]
    big = ["--num-layers", "1", "--hidden-size", "4096", "--num-attention-heads", "32", "--seq-length", "16",
           "--micro-batch-size", "1", "--distributed-backend", "gloo", *tok]
    assert run_worker(ported_tree, "args", big)["ffn_hidden_size"] == 11008
    assert run_worker(ported_tree, "args", big + ["--ffn-hidden-size", "13824"])["ffn_hidden_size"] == 13824
    defaults = run_worker(ported_tree, "args", TINY + tok)
    assert defaults["activation_func_type"] == "swiglu"
    assert defaults["position_embedding_type"] == "rotary"
    assert defaults["layernorm_type"] == "rmsnorm" and defaults["layernorm_epsilon"] == 1e-6
    assert defaults["no_bias"] is True and defaults["bias_gelu_fusion"] is False
    assert defaults["max_position_embeddings"] == 16  # not required with rotary
    assert defaults["rope_theta"] == 10000.0


def test_no_linear_has_a_bias_the_gate_included(ported_tree, sentencepiece_model):
    out = run_worker(ported_tree, "biases", TINY + ["--tokenizer-model", str(sentencepiece_model)])
    assert any("dense_h_to_4h" in name for name in out["linears"])
    assert out["with_bias"] == [] and out["bias_parameters"] == []
    ffn = 256  # int(2/3 * 4 * 64) = 170, rounded up to 256
    assert out["gate_up_shape"] == [2 * ffn, 64]


def test_rmsnorm_weights_get_no_weight_decay(ported_tree, sentencepiece_model):
    out = run_worker(ported_tree, "weight_decay", TINY + ["--tokenizer-model", str(sentencepiece_model)])
    assert out["norm_weights"] == 2 * 2 + 1  # two per layer and the final norm
    assert out["norm_weights_without_decay"] == out["norm_weights"]
    assert out["norm_weights_with_decay"] == 0


def test_non_pipe_checkpoint_holds_the_untied_head(ported_tree, sentencepiece_model):
    out = run_worker(ported_tree, "checkpoint", TINY + ["--tokenizer-model", str(sentencepiece_model)])
    assert "output_layer" in out["keys"] and out["output_layer_saved"]
    assert out["max_abs_diff_after_reload"] == 0.0


def test_sentencepiece_choice_has_code_behind_it(ported_tree, sentencepiece_model):
    out = run_worker(ported_tree, "tokenizer", TINY + ["--tokenizer-model", str(sentencepiece_model)])
    assert out["type"] == "SentencePieceTokenizer"
    assert out["roundtrip"] == "Return the sum of two numbers."
    assert out["eod"] == 2 and out["vocab_size"] == 500
    assert out["padded_vocab_size"] % 128 == 0 and out["padded_vocab_size"] >= 500


def test_fused_attention_matches_the_trees_unfused_attention(ported_tree, sentencepiece_model):
    out = run_worker(ported_tree, "fused_attention", TINY + ["--tokenizer-model", str(sentencepiece_model)])
    assert out["fused_calls"] == 2  # one per layer
    assert out["max_abs_logits"] <= 1e-5 * max(1.0, out["logits_scale"])
    assert out["max_rel_grad"] <= 1e-4
    assert out["max_abs_logits_packed"] <= 1e-5 * max(1.0, out["logits_scale"])  # a non-causal mask
    assert out["packed_differs_from_causal"] > 1e-3  # ... which is really applied
    assert out["fused_calls_with_dropout"] == 0  # training with attention dropout: the tree's code
    assert out["fused_calls_eval_with_dropout"] == 2  # eval: dropout is off
    assert out["fused_calls_with_cache"] == 0  # the key/value cache path: the tree's code
    assert out["kernel_cpu"] == "torch.nn.functional.scaled_dot_product_attention"


@pytest.mark.parametrize("mode", [pytest.param("pipe", marks=pytest.mark.slow), "pp2"])  # the one-stage pipe: every family's own smoke trains one
def test_smoke_training_loss_falls(ported_tree, smoke_workdir, mode, monkeypatch):
    """...and one `porter smoke` profiles the tree once and plans once (the spec at its size)."""
    import porter.profile
    from porter.planner import Planner

    calls = {"profile": 0, "plan": 0}

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(porter.profile, "build_profile", counted("profile", porter.profile.build_profile))
    monkeypatch.setattr(Planner, "plan", counted("plan", Planner.plan))
    args = ["smoke", "llama", "--target", str(ported_tree), "--workdir", str(smoke_workdir), "--steps", "20"]
    if mode == "pp2":
        args += ["--nproc", "2", "--pp", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "smoke passed" in result.output
    assert result.output.count("loss ") >= 20
    assert calls == {"profile": 1, "plan": 1}


def test_real_checkpoint_of_the_non_pipe_engine_holds_the_head(ported_tree, smoke_workdir, tmp_path):
    """A real DeepSpeed run with --no-pipeline-parallel --save: the saved module has the head."""
    import torch

    from porter.catalog import load_spec
    from porter.smoke import SmokeConfig
    from porter.smoke.argv import training_arguments
    from porter.smoke.data import prepare_data
    from porter.smoke.port import SmokePort
    from porter.source import SourceTree
    from porter.treerun.script import launch

    spec = load_spec("llama")
    config = SmokeConfig(steps=2, pipe=False)
    model, prefix = prepare_data(ported_tree, smoke_workdir, config.vocab_size)
    args = training_arguments(SmokePort.of(spec, SourceTree.open(ported_tree), config), tmp_path, config, model, prefix)
    save = tmp_path / "checkpoint"
    run = launch(ported_tree, spec.script, args + ["--save", str(save), "--save-interval", "2"])
    assert run.returncode == 0, run.log[-3000:]
    files = list(save.rglob("mp_rank_00_model_states.pt"))
    assert files, sorted(str(p) for p in save.rglob("*"))
    module = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
    assert "output_layer" in module and "language_model" in module
    assert module["output_layer"]["output_layer.weight"].shape[1] == 64
    shutil.rmtree(save)


def test_a_spec_naming_the_trees_own_files_ports_under_free_names(tmp_path):
    """A spec whose entry point is the tree's pretrain_gpt.py and whose model module would be
    gpt_model.py: the tree's files are left as they are, porter's take free _porter names."""
    tree = copy_sample_tree(tmp_path / "tree")
    spec = tmp_path / "gpt_named.toml"
    text = (Path(__file__).resolve().parents[2] / "model_diffs" / "llama.toml").read_text()
    spec.write_text(text.replace('name = "llama"', 'name = "gpt"').replace('class_prefix = "LLaMA"', 'class_prefix = "GPT"')
                    .replace('script = "pretrain_llama.py"', 'script = "pretrain_gpt.py"'))
    before = {p: (tree / p).read_bytes() for p in ("pretrain_gpt.py", "megatron/model/gpt_model.py")}
    done = CliRunner().invoke(app, ["apply", str(spec), "--target", str(tree)])
    assert done.exit_code == 0, done.output
    assert "created pretrain_gpt_porter.py" in done.output and "created megatron/model/gpt_porter_model.py" in done.output
    assert (tree / "pretrain_gpt.py").read_bytes() == before["pretrain_gpt.py"]
    assert "class GPTPorterModel(" in (tree / "megatron/model/gpt_porter_model.py").read_text()


@pytest.mark.parametrize("stage", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_zero_stages_build_and_train_the_plain_model(ported_tree, smoke_workdir, sentencepiece_model, tmp_path, stage):
    """pretrain_llama.py builds under the tree's deepspeed.zero.Init: at ZeRO-3 each of two ranks
    holds half of every parameter from the start (not the full model), and both stages train."""
    from porter.catalog import load_spec
    from porter.smoke import SmokeConfig, run_smoke

    if stage == 3:
        config = tmp_path / "ds.json"
        config.write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
                                      "zero_optimization": {"stage": 3}}))
        env = environment(ported_tree, 2)
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
             "--master_port", env["MASTER_PORT"], str(WORKER), "zero3", "--", *TINY, "--tokenizer-model", str(sentencepiece_model), "--no-pipeline-parallel",
             "--deepspeed", "--deepspeed_config", str(config), "--zero-stage", "3"],
            cwd=ported_tree, env=env, capture_output=True, text=True, timeout=600)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
        seen = json.loads(lines[-1][len("RESULT "):])
        assert seen["partitioned"] == seen["parameters"] > 0
        assert seen["local_elements"] * 2 <= seen["full_elements"] + 2 * seen["parameters"]  # half each (+ padding)
    result = run_smoke(load_spec("llama"), ported_tree, smoke_workdir / f"zero{stage}",
                       SmokeConfig(steps=10, nproc=2, pipe=False, zero_stage=stage))
    assert result.passed, (result.failure, result.log[-3000:])
