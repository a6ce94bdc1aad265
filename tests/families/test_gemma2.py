"""Gemma-2 ported into a tree Gemma was ported into first (and Gemma-3 after it): verified against Gemma2ForCausalLM at TP=1,
TP=2 (gemma-2-9b's own config.json as MODEL) and PP=2, broken on purpose once per new difference,
converted both ways bit-exact at TP=2 and PP=2 (all four norms of every layer), and trained on
both engines.

The tiny model shows every difference: sandwich norms (RMSNorm x (1 + w), weights in [0.5, 1.5]),
scores soft-capped at 4 and logits at 2 (each reaches its cap: scores and logits are a few units),
scores scaled by 24 ** -0.5 for heads of 32, an 8-position window (of 32) on layer 0 and none on
layer 1, grouped-query attention 2/4.
"""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify
from tests.families.test_gemma2_config import GEMMA2_9B

GEMMA2 = load_spec("gemma2")
LAYER0, LAYER1 = "language_model.encoder.layers.0", "language_model.encoder.layers.1"
NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")


@pytest.fixture(scope="module")
def gemma2_tree(gemmas_tree):
    return gemmas_tree


def passed(result, classes):
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
        assert not [p for p in r.probes if p.diverges]
        print(f"{r.model_class} TP={r.tensor_parallel} PP={r.pipeline_parallel}: max |dlogit| {r.max_logit_diff:.3g}")
    return result


def test_gemma2_matches_hf(gemma2_tree, tmp_path):
    result = passed(verify(GEMMA2, gemma2_tree, tmp_path), ["Gemma2Model", "Gemma2ModelPipe"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["attn_logit_softcapping"], config["final_logit_softcapping"], config["query_pre_attn_scalar"]) == \
        (4.0, 2.0, 24)
    assert config["layer_types"] == ["sliding_attention", "full_attention"] and config["sliding_window"] == 8
    probes = {p.name: p for p in result.results[0].probes}
    for name in ("attention_output_layernorm", "post_attention_layernorm", "mlp_output_layernorm"):
        assert f"{LAYER1}.{name}" in probes, name  # the four norms, each compared with its HF twin
    assert "pre_feedforward" in probes[f"{LAYER0}.post_attention_layernorm"].what
    assert probes["output_layer"].scale <= 2.0  # the logits HF returns, capped at 2


@pytest.mark.parametrize("options", [VerifyOptions(tensor_parallel=2), VerifyOptions(pipeline_parallel=2, kinds=("pipe",))],
                         ids=["tp2-gemma-2-9b-config", "pp2"])
def test_gemma2_matches_hf_at_tp2_and_pp2(gemma2_tree, tmp_path, options):
    """TP=2 with gemma-2-9b's config.json as MODEL (8 key/value heads: 2 of 4 at the tiny size, one per
    rank); PP=2: the windowed layer on one stage, the global one on the other."""
    tree, spec = gemma2_tree, GEMMA2
    if options.tensor_parallel == 2:  # the file as MODEL: its own port, into a copy of the shared tree
        folder = tmp_path / "gemma-2-9b"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(GEMMA2_9B))
        tree = tmp_path / "tree"
        shutil.copytree(gemma2_tree, tree, ignore=shutil.ignore_patterns("__pycache__"))
        done = CliRunner().invoke(app, ["apply", str(folder), "--target", str(tree)])
        assert done.exit_code == 0, done.output
        spec = load_spec(str(folder))
    classes = [spec.model_class, f"{spec.model_class}Pipe"] if options.pipeline_parallel is None else [f"{spec.model_class}Pipe"]
    result = passed(verify(spec, tree, tmp_path / "verify", options), classes)
    print(f"gemma2 {options.tensor_parallel=} {options.pipeline_parallel=}: "
          + ", ".join(f"{r.model_class} {r.max_logit_diff:.3g}" for r in result.results))


@pytest.mark.slow
def test_gemma_ported_before_gemma2_still_matches_hf(gemma2_tree, tmp_path):
    """Gemma-1 shares the tree's norms, attention and generated files with Gemma-2: its port still holds."""
    passed(verify(load_spec("gemma"), gemma2_tree, tmp_path, VerifyOptions(kinds=("model",))), ["GemmaModel"])


def _swapped_norm_weights(layer):
    """The classic Gemma-2 conversion mistake: HF's post_attention_layernorm taken as the tree's
    post_attention_layernorm (the norm before the MLP), its pre_feedforward_layernorm as the attention
    output's."""
    from porter.differences.norm_placement.weights import sandwich_weights
    from porter.weights import Weight

    sandwich_weights(layer)
    layer.replace("post_norm", [Weight("post_attention_layernorm.weight", ("post_attention_layernorm.weight",))])
    layer.replace("attention_output_norm", [Weight("attention_output_layernorm.weight",
                                                   ("pre_feedforward_layernorm.weight",))])


# A port without one of Gemma-2's differences: (file, (old, new)) edited in a copy of the tree, or a
# conversion mistake, and the module verify must name (the first that diverges)
BREAKS = {
    "no attention scale": ("megatron/model/transformer.py",
                           ("math.sqrt(args.query_pre_attn_scalar or self.hidden_size_per_attention_head)",
                            "math.sqrt(self.hidden_size_per_attention_head)"), f"{LAYER0}.attention"),
    "no attention softcap": ("megatron/model/softcap.py", ("    if cap is None:\n", "    if True:\n"),
                             f"{LAYER0}.attention"),
    "no logit softcap": ("megatron/model/gemma2_model.py", ("            if softcap is not None:\n",
                                                           "            if softcap is None:\n"), "output_layer"),
    "the window on every layer": ("megatron/model/sliding_window.py",
                                  ("if not window or (pattern and layer_number % pattern == 0):", "if not window:"),
                                  f"{LAYER1}.attention"),
    "sandwich norm weights swapped": (None, _swapped_norm_weights, f"{LAYER0}.attention_output_layernorm"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_names_the_module_of_a_missing_gemma2_difference(gemma2_tree, tmp_path, monkeypatch, name):
    file, edit, module = BREAKS[name]
    broken = tmp_path / "broken"
    shutil.copytree(gemma2_tree, broken, ignore=shutil.ignore_patterns("__pycache__"))
    if file is None:
        monkeypatch.setattr("porter.differences.norm_placement.sandwich_weights", edit)
    else:
        old, new = edit
        text = (broken / file).read_text()
        assert old in text, f"{old!r} is not in {file}"
        (broken / file).write_text(text.replace(old, new))
    result = verify(GEMMA2, broken, tmp_path / "verify", VerifyOptions(kinds=("model",)))
    (r,) = result.results
    assert not result.passed and r.max_logit_diff > 1e-5
    first = r.first_divergence
    assert first is not None and first.name == module, [(p.name, p.max_diff) for p in r.probes]
    print(f"{name}: first divergence {first.name}, {first.max_diff:.3g}; logits {r.max_logit_diff:.3g}")


def tiny_gemma2(folder):
    """A tiny Gemma2ForCausalLM with its own numbers and random norms (w of every norm drawn, not zero)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=32, vocab_size=250, max_position_embeddings=64,
                          rms_norm_eps=3e-6, query_pre_attn_scalar=24, sliding_window=16,
                          attn_logit_softcapping=20.0, final_logit_softcapping=15.0)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


def round_trip(target, tmp_path, layout):
    """HF -> Megatron at `layout` -> HF: bit-exact, every norm weight where the tree's norm does its work,
    the config's fields back as they were. Returns the Megatron checkpoint."""
    hf = tiny_gemma2(tmp_path / "hf")
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", "gemma2",
                               "--target", str(target), *layout])
    assert done.exit_code == 0, done.output
    args = torch.load(next((ckpt / "release").glob("mp_rank_00*model_states.pt")), weights_only=False)["args"]
    assert (args.attention_softcap, args.final_logit_softcap, args.query_pre_attn_scalar) == (20.0, 15.0, 24)
    assert (args.sliding_window, args.sliding_window_pattern, args.norm_placement) == (16, 2, "sandwich")

    _, hf_state = convert.read_hf(hf)
    if layout == ["--pp", "2"]:  # each HF norm in the tree's norm that does its work, as it is
        first = torch.load(ckpt / "release" / "layer_02-model_00-model_states.pt", weights_only=False)
        for tree, theirs in (("input_layernorm", "input_layernorm"), ("attention_output_layernorm", "post_attention_layernorm"),
                             ("post_attention_layernorm", "pre_feedforward_layernorm"),
                             ("mlp_output_layernorm", "post_feedforward_layernorm")):
            assert torch.equal(first[f"{tree}.weight"], hf_state[f"model.layers.0.{theirs}.weight"]), tree

    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "gemma2", "--target", str(target)])
    assert done.exit_code == 0, done.output
    (config, state), (config2, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2) and all(f"model.layers.3.{n}.weight" in state2 for n in NORMS)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    for key in ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "sliding_window",
                "layer_types", "head_dim", "num_key_value_heads", "rms_norm_eps"):
        assert config2[key] == config[key], key
    return ckpt


@pytest.mark.parametrize("layout", [["--pp", "2"], ["--tp", "2"]], ids=["pp2", "tp2"])
def test_convert_round_trips_bit_exact(tmp_path, layout, gemma2_tree):
    round_trip(gemma2_tree, tmp_path, layout)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [["--pp", "2"], pytest.param(["--tp", "2"], marks=pytest.mark.slow),
                                    pytest.param(["--tp", "2", "--no-pipe"], marks=pytest.mark.slow)],
                         ids=["pp2", "tp2", "tp2-plain"])
def test_convert_round_trips_bit_exact_and_the_tree_loads_it(gemma2_tree, tmp_path, layout):
    ckpt = round_trip(gemma2_tree, tmp_path, layout)
    # the tree's own load_checkpoint reads it, and the model gives the HF class's logits
    result = verify(GEMMA2, gemma2_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()


@pytest.mark.parametrize("engine", [[], ["--no-pipe"]], ids=["pipe", "plain"])
def test_gemma2_trains(gemma2_tree, smoke_workdir, engine):
    done = CliRunner().invoke(app, ["smoke", "gemma2", "--target", str(gemma2_tree), "--steps", "10",
                                    "--workdir", str(smoke_workdir), "--json", *engine])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    log = (smoke_workdir / "train.log").read_text().split("\n\n", 1)[0]
    for option in ("--sliding-window-pattern 2", "--attention-softcap", "--final-logit-softcap", "--query-pre-attn-scalar"):
        assert option in log, option
    print(f"smoke gemma2 {' '.join(engine) or 'pipe'}: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
