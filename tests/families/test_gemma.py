"""Gemma ported into a tree LLaMA was ported into first: verified against GemmaForCausalLM at TP=1, TP=2
(Gemma-7B's config, multi-head) and PP=2 (the tied embedding across stages), broken on purpose once
per new difference, converted both ways bit-exact, and trained.

The gemma spec's tiny model shows every difference: one key/value head of 4 (MQA), head_dim 32 for
hidden 64 / 4 heads, GeGLU with the tanh GELU, RMSNorm weights w in [0.5, 1.5] scaling by 1 + w, the
embeddings times sqrt(64) = 8, and the tied output projection.
"""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.smoke import SmokeConfig, run_smoke
from porter.verify.parity import VerifyOptions, verify
from tests.conftest import copy_sample_tree
from tests.families.test_gemma_config import GEMMA_7B
from tests.helpers.trees import edited_copy

GEMMA = load_spec("gemma")
LAYER0 = "language_model.encoder.layers.0"


@pytest.fixture(scope="session")
def gemma_7b_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "gemma-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(GEMMA_7B))
    return folder


@pytest.fixture(scope="session")
def gemma_tree(tmp_path_factory, gemma_7b_folder):
    """llama, then gemma, then Gemma-7B's config.json applied to one copy of the sample tree (shared)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("gemma") / "Megatron-DeepSpeed")
    for model in ("llama", "gemma", str(gemma_7b_folder)):
        result = CliRunner().invoke(app, ["apply", model, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


def passed(result, classes):
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
        assert not [p for p in r.probes if p.diverges]
    return result


@pytest.mark.parametrize("options", [VerifyOptions(), VerifyOptions(pipeline_parallel=2, kinds=("pipe",))],
                         ids=["tp1", "pp2"])
def test_gemma_matches_hf(gemma_tree, tmp_path, options):
    passed(verify(GEMMA, gemma_tree, tmp_path, options),
           ["GemmaModel", "GemmaModelPipe"] if options.pipeline_parallel is None else ["GemmaModelPipe"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"]) == (1, 4, 32)
    assert config["hidden_act"] == "gelu_pytorch_tanh" and config["tie_word_embeddings"] is True


def test_gemma_7b_config_matches_hf_at_tp2(gemma_tree, gemma_7b_folder, tmp_path):
    """TP=2 on Gemma-7B's shape (a key/value head per query head): each rank holds whole key/value
    heads, so the one head of MQA does not split over 2 ranks (refused by name, as in Megatron)."""
    spec = load_spec(str(gemma_7b_folder))
    result = passed(verify(spec, gemma_tree, tmp_path / "7b", VerifyOptions(tensor_parallel=2)),
                    ["Gemma7bModel", "Gemma7bModelPipe"])
    assert result.results[0].tensor_parallel == 2
    config = json.loads((tmp_path / "7b" / "hf" / "config.json").read_text())
    assert (config["num_key_value_heads"], config["head_dim"]) == (4, 16)  # 7B shrunk: one per query head, 16 x 4 > hidden 48
    refused = CliRunner().invoke(app, ["verify", "gemma", "--target", str(gemma_tree), "--tp", "2",
                                       "--workdir", str(tmp_path / "mqa")])
    assert refused.exit_code == 2 and "key/value heads 1, --tp 2" in refused.output


def test_llama_ported_first_still_matches_hf(gemma_tree, tmp_path):
    passed(verify(load_spec("llama"), gemma_tree, tmp_path, VerifyOptions(kinds=("model",))), ["LLaMAModel"])


def test_llama_and_gemma_share_their_lines_in_either_order(gemma_tree, tmp_path):
    """A second apply of either changes nothing; the gated MLP's lines are there once each."""
    reverse = copy_sample_tree(tmp_path / "reverse")
    for model in ("gemma", "llama"):
        assert CliRunner().invoke(app, ["apply", model, "--target", str(reverse)]).exit_code == 0
    for tree in (gemma_tree, reverse):
        for model in ("llama", "gemma"):
            again = CliRunner().invoke(app, ["diff", model, "--target", str(tree), "--stat"])
            assert again.exit_code == 0 and "nothing to do" in again.output, again.output
        text = (tree / "megatron/model/transformer.py").read_text()
        for line in ("gate_and_up = 2 if args.activation_func_type in ('swiglu', 'geglu') else 1",
                     "self.activation_func = swiglu\n", "self.activation_func = geglu\n",
                     "from megatron.model.swiglu import geglu, swiglu\n"):
            assert text.count(line) == 1, line
    assert (reverse / "megatron/model/swiglu.py").read_text() == (gemma_tree / "megatron/model/swiglu.py").read_text()


# A port without one of Gemma's differences: (file, (old, new), the module verify must name)
BREAKS = {
    "no norm offset": ("megatron/model/rmsnorm.py", ("return self.weight.float() + self.offset if self.offset else",
                                                     "return self.weight.float() if self.offset else"),
                       f"{LAYER0}.input_layernorm"),
    "no embedding scale": ("pretrain_gemma.py", ("scale_embeddings=True,", "scale_embeddings=False,"),
                           "language_model.embedding"),
    "erf GELU instead of tanh": ("megatron/model/swiglu.py", ('return F.gelu(gate, approximate="tanh") * up',
                                                              "return F.gelu(gate) * up"),
                                 f"{LAYER0}.mlp"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_names_the_module_of_a_missing_gemma_difference(gemma_tree, tmp_path, name):
    file, (old, new), module = BREAKS[name]
    broken = edited_copy(gemma_tree, tmp_path / "broken", (file, old, new))
    result = verify(GEMMA, broken, tmp_path / "verify", VerifyOptions(kinds=("model",)))
    (r,) = result.results
    assert not result.passed and r.max_logit_diff > 1e-5
    first = r.first_divergence
    assert first is not None and first.name == module, [(p.name, p.max_diff) for p in r.probes]
    if name == "erf GELU instead of tanh":
        assert "GeGLU" in first.what


def tiny_gemma(folder):
    """A tiny GemmaForCausalLM with its own numbers: MQA, head_dim 32 for 64 / 4, eps 3e-6, random norms."""
    from transformers import GemmaConfig, GemmaForCausalLM

    config = GemmaConfig(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=1, head_dim=32, vocab_size=250, max_position_embeddings=64,
                         rms_norm_eps=3e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model = GemmaForCausalLM(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


# the test command keeps the bit-exact round trips of gemma-2b and gemma-7b (the battery) and of
# Gemma-2/3 at PP=2 and TP=2
@pytest.mark.parametrize("engine", [pytest.param("pipe-pp2", marks=pytest.mark.slow),
                                    pytest.param("plain", marks=pytest.mark.slow)])
def test_convert_round_trips_bit_exact_and_the_tree_loads_it(gemma_tree, tmp_path, engine):
    hf = tiny_gemma(tmp_path / "hf")
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    extra = ["--pp", "2"] if engine == "pipe-pp2" else ["--no-pipe"]
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", "gemma",
                               "--target", str(gemma_tree), *extra])
    assert done.exit_code == 0, done.output
    args = torch.load(ckpt / "release" / "mp_rank_00_model_states.pt", weights_only=False)["args"]
    assert (args.rmsnorm_weight_offset, args.num_key_value_heads, args.kv_channels) == (1.0, 1, 32)
    assert (args.layernorm_epsilon, args.activation_func_type, args.scale_embeddings) == (3e-6, "geglu", True)

    _, hf_state = convert.read_hf(hf)
    assert "lm_head.weight" not in hf_state  # tied: stored once, as HF stores it
    if engine == "pipe-pp2":  # HF's stored w is the tree's w: no arithmetic on the way
        layer = torch.load(ckpt / "release" / "layer_02-model_00-model_states.pt", weights_only=False)
        assert torch.equal(layer["input_layernorm.weight"], hf_state["model.layers.0.input_layernorm.weight"])
        assert not (ckpt / "release" / "layer_06-model_00-model_states.pt").exists()  # the head is the embedding

    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "gemma", "--target", str(gemma_tree)])
    assert done.exit_code == 0, done.output
    (config, state), (config2, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    for key in ("head_dim", "num_key_value_heads", "hidden_act", "tie_word_embeddings", "rms_norm_eps",
                "bos_token_id", "eos_token_id"):
        assert config2[key] == config[key], key

    # the tree's own load_checkpoint reads it, and the model gives GemmaForCausalLM's logits
    result = verify(GEMMA, gemma_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()
    assert result.results[0].pipeline_parallel == (2 if engine == "pipe-pp2" else 1)


@pytest.mark.slow  # in the test command: a trained checkpoint converted (tests/verify/test_verify.py), Gemma's weights both ways (the battery's gemma-2b, gemma-7b)
def test_gemma_trains_and_its_checkpoint_converts_to_the_same_model(gemma_tree, tmp_path, smoke_workdir):
    """porter smoke's run (SentencePiece, the entry point's defaults): the loss falls, and the trained
    checkpoint (w moved away from its zero start) converted to HF gives the tree's logits."""
    saved = tmp_path / "checkpoints"
    run = run_smoke(GEMMA, gemma_tree, smoke_workdir,
                    SmokeConfig(steps=20, extra_args=["--save", str(saved), "--save-interval", "20"]))
    assert run.returncode == 0, run.log[-3000:]
    assert run.passed, run.losses
    result = verify(GEMMA, gemma_tree, tmp_path / "verify", VerifyOptions(checkpoint=saved))
    assert result.passed, result.as_dict()
    assert result.results[0].model_class == "GemmaModelPipe"


@pytest.mark.slow
def test_a_structure_mismatch_in_the_tied_pipe_names_the_module_not_the_embedding(gemma_tree, tmp_path):
    """A bias the port does not expect: verify loads the checkpoint loosely (what fits), and in the
    pipe model that includes the tied embedding (a DeepSpeed tied layer, not a numbered child),
    so the first divergence is the biased module, as in the plain model."""
    broken = tmp_path / "broken"
    shutil.copytree(gemma_tree, broken, ignore=shutil.ignore_patterns("__pycache__"))
    path = broken / "megatron/model/transformer.py"
    old = "            skip_bias_add=True,\n            bias=not args.no_bias)"
    text = path.read_text()
    at = text.index("self.dense_4h_to_h = ")
    assert text.count(old, at) >= 1
    path.write_text(text[:at] + text[at:].replace(old, "            skip_bias_add=True,\n            bias=True)", 1))
    result = verify(GEMMA, broken, tmp_path / "verify", VerifyOptions(kinds=("pipe",)))
    (r,) = result.results
    assert not result.passed and r.loaded_by.startswith("porter (loosely")
    first = r.first_divergence
    assert first is not None and first.name == f"{LAYER0}.mlp.dense_4h_to_h", [(p.name, p.max_diff) for p in r.probes]
