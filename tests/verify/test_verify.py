"""`porter verify` on the ported sample tree: HF parity at TP=1, TP=2 and PP=2, and on a
checkpoint the tree itself trained and saved."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.smoke import SmokeConfig, run_smoke
from porter.verify.parity import VerifyOptions, verify

SPEC = load_spec("llama")


@pytest.fixture(scope="module")
def tp1(ported_tree, tmp_path_factory):
    return verify(SPEC, ported_tree, tmp_path_factory.mktemp("tp1"))


def test_both_generated_models_match_hf(tp1):
    assert tp1.passed, tp1.as_dict()
    assert [r.model_class for r in tp1.results] == ["LLaMAModel", "LLaMAModelPipe"]
    for r in tp1.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal
        assert abs(r.loss - r.reference_loss) <= 1e-5
        assert r.loaded_by == "the tree's megatron.checkpointing.load_checkpoint"
        assert not r.structure
        assert len(r.probes) == 1 + 2 * 10 + 2  # embedding, 10 per layer, final norm, head
        assert not [p for p in r.probes if p.diverges]
    assert tp1.results[0].max_token_loss_diff <= 1e-5


def test_tensor_parallel_2_gives_the_logits_of_tp1(ported_tree, tmp_path, tp1):
    tp2 = verify(SPEC, ported_tree, tmp_path, VerifyOptions(tensor_parallel=2))
    assert tp2.passed, tp2.as_dict()
    for one, two in zip(tp1.results, tp2.results, strict=True):
        assert two.tensor_parallel == 2
        assert (one.logits - two.logits).abs().max().item() <= 1e-5
        assert torch.equal(one.logits.argmax(-1), two.logits.argmax(-1))


def test_pipeline_parallel_2_gives_the_logits_of_tp1(ported_tree, tmp_path, tp1):
    pp2 = verify(SPEC, ported_tree, tmp_path, VerifyOptions(pipeline_parallel=2, kinds=("pipe",)))
    assert pp2.passed, pp2.as_dict()
    (pipe,) = pp2.results
    assert pipe.pipeline_parallel == 2
    assert (pipe.logits - tp1.results[1].logits).abs().max().item() <= 1e-5


def test_a_checkpoint_the_tree_trained_converts_to_the_same_model(ported_tree, tmp_path, smoke_workdir):
    """megatron-to-hf on the tree's own --save output: HF gives the tree's logits."""
    saved = tmp_path / "checkpoints"
    trained = run_smoke(SPEC, ported_tree, smoke_workdir,
                        SmokeConfig(steps=2, global_batch_size=4, extra_args=["--save", str(saved),
                                                                              "--save-interval", "2"]))
    assert trained.returncode == 0, trained.log[-3000:]
    result = verify(SPEC, ported_tree, tmp_path / "verify", VerifyOptions(checkpoint=saved))
    assert result.passed, result.as_dict()
    assert result.results[0].model_class == "LLaMAModelPipe"
    assert result.results[0].max_logit_diff <= 1e-5


def test_a_real_run_loads_the_converted_checkpoint(ported_tree, tmp_path, smoke_workdir):
    """HF -> porter convert -> the tree's pretrain_llama.py --load --finetune, one step at lr 0,
    --save -> porter convert back: the very same HF tensors."""
    from porter import convert
    from porter.verify.reference import TinyConfig, random_reference

    config = SmokeConfig(steps=1, global_batch_size=4, lr=0.0)  # the smoke run's tiny model and data
    tiny = TinyConfig(num_layers=config.num_layers, hidden_size=config.hidden_size, seq_length=config.seq_length,
                      num_attention_heads=config.num_attention_heads, vocab_size=config.vocab_size)
    model = random_reference(SPEC, tiny)
    convert.write_hf(tmp_path / "hf", model.config.to_dict(), model.state_dict())
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(tmp_path / "hf"), "--out",
                               str(tmp_path / "converted"), "--target", str(ported_tree)])
    assert done.exit_code == 0, done.output
    config = replace(config, extra_args=["--load", str(tmp_path / "converted"), "--finetune",
                                         "--save", str(tmp_path / "saved"), "--save-interval", "1"])
    run = run_smoke(SPEC, ported_tree, smoke_workdir, config)
    assert run.returncode == 0 and len(run.losses) == 1, run.log[-3000:]
    # lr 0: the step changes nothing, so what the run saved is what it loaded, bit for bit
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(tmp_path / "saved"), "--out",
                               str(tmp_path / "hf-again"), "--target", str(ported_tree)])
    assert done.exit_code == 0, done.output
    again = convert.read_hf(tmp_path / "hf-again")[1]
    original = convert.read_hf(tmp_path / "hf")[1]
    assert sorted(again) == sorted(original)
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_verify_refuses_a_tree_that_is_not_ported(tmp_path):
    import shutil

    from porter.resources import sample_tree_dir

    shutil.copytree(sample_tree_dir(), tmp_path / "tree")
    done = CliRunner().invoke(app, ["verify", "llama", "--target", str(tmp_path / "tree"), "--json"])
    assert done.exit_code == 2
    assert "pretrain_llama.py is missing" in done.output


def test_verify_json_reports_figures_with_a_padded_vocabulary(ported_tree, tmp_path):
    # 250 tokens: the tree pads them to 256; its loss runs over the padding rows too
    done = CliRunner().invoke(app, ["verify", "llama", "--target", str(ported_tree), "--models", "model",
                                    "--layers", "1", "--vocab", "250", "--workdir", str(tmp_path), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["passed"] is True and report["config"]["vocab_size"] == 250
    (result,) = report["results"]
    assert result["class"] == "LLaMAModel" and result["max_abs_logit_diff"] <= 1e-5 and result["argmax_equal"]
    assert result["max_abs_token_loss_diff"] <= 1e-5
    assert result["first_divergence"] is None


@pytest.mark.slow
def test_tensor_and_pipeline_parallel_together(ported_tree, tmp_path, tp1):
    """TP=2 x PP=2: four processes (minutes on two cores: a slow sweep, outside CI)."""
    both = verify(SPEC, ported_tree, tmp_path, VerifyOptions(tensor_parallel=2, pipeline_parallel=2, kinds=("pipe",)))
    assert both.passed, both.as_dict()
    assert (both.results[0].logits - tp1.results[1].logits).abs().max().item() <= 1e-5
