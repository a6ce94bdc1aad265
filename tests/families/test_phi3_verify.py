"""`porter verify` for Phi-3 and Phi-3.5 against Phi3ForCausalLM, on one tree holding both ports:
the fused qkv_proj and gate_up_proj converted into the tree's layout, the sliding window, and
longrope on both sides of its original context (a tiny original context of 16: a batch of 32
positions takes the long factors, one of 16 the short ones, as transformers chooses); TP=1,
TP=2 and PP=2. Broken on purpose: a wrong qkv split in convert, and longrope's lists swapped in the
tree, each fail and name the module that differs."""

import json

import pytest
from safetensors import safe_open

from porter.catalog import load_spec
from porter.differences.hf_fused_weights import weights as fused_weights
from porter.verify.parity import VerifyOptions, verify
from porter.verify.reference import TinyConfig
from tests.helpers.trees import edited_copy

PHI3, PHI3_5 = load_spec("phi3"), load_spec("phi3_5")
ORIGINAL = "position_embedding.rope_scaling.original_max_position_embeddings"
PHI3_5_16 = PHI3_5.with_values(**{ORIGINAL: 16})  # a tiny original context: both lists within reach
LAYER0 = "language_model.encoder.layers.0"
SIZES = [VerifyOptions(), VerifyOptions(tensor_parallel=2), VerifyOptions(pipeline_parallel=2, kinds=("pipe",))]
IDS = ["tp1", "tp2", "pp2"]
LONG, SHORT = TinyConfig(seq_length=32), TinyConfig(seq_length=16)  # past the original 16, and at it


def passed(result, prefix, options):
    classes = [f"{prefix}Model", f"{prefix}ModelPipe"] if options.kinds is None else [f"{prefix}ModelPipe"]
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
        assert not [p for p in r.probes if p.diverges]
        print(f"{r.model_class} TP={r.tensor_parallel} PP={r.pipeline_parallel} seq {result.config['seq_length']}: "
              f"max |dlogit| {r.max_logit_diff:.3g}")
    return result


def hf_files(workdir):
    config = json.loads((workdir / "hf" / "config.json").read_text())
    with safe_open(str(workdir / "hf" / "model.safetensors"), "pt") as weights:
        return config, set(weights.keys())


def first_divergence(result):
    assert not result.passed
    (r,) = result.results
    assert r.max_logit_diff > 1e-2
    return r.first_divergence


def test_phi3_5_past_its_original_context_matches_hf(phi3_tree, tmp_path):
    """The default command's proof: longrope's long factors (32 positions past an original 16),
    the attention factor of Phi-3.5's factor 32, the window at 8, HF's fused weights."""
    passed(verify(PHI3_5_16, phi3_tree, tmp_path, VerifyOptions(tiny=LONG)), "Phi3_5", VerifyOptions())
    config, names = hf_files(tmp_path)
    assert config["architectures"] == ["Phi3ForCausalLM"] and config["original_max_position_embeddings"] == 16
    rope = config["rope_parameters"]
    assert rope["rope_type"] == "longrope" and rope["factor"] == 32.0 and len(rope["long_factor"]) == 8
    assert config["sliding_window"] == 8 and config["max_position_embeddings"] == 32
    assert {"model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"} <= names
    assert not {n for n in names if n.endswith(("attn.q_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"))}


def test_a_wrong_qkv_split_in_convert_fails_at_the_qkv_projection(phi3_tree, tmp_path, monkeypatch):
    """convert cutting HF's qkv_proj as [q; v; k]: the tree's keys are HF's values."""
    cut = fused_weights._cut

    def wrong(tensor, sizes):
        parts = cut(tensor, sizes)
        return (parts[0], parts[2], parts[1]) if len(sizes) == 3 else parts

    monkeypatch.setattr(fused_weights, "_cut", wrong)
    first = first_divergence(verify(PHI3, phi3_tree, tmp_path, VerifyOptions(kinds=("model",))))
    assert first.name == f"{LAYER0}.attention.query_key_value", first
    assert first.what.startswith("fused q, k, v projection")


@pytest.mark.parametrize("options", SIZES, ids=IDS)
def test_phi3_matches_hf(phi3_tree, tmp_path, options):
    passed(verify(PHI3, phi3_tree, tmp_path, options), "Phi3", options)
    config, names = hf_files(tmp_path)
    assert config["sliding_window"] == 8 and "rope_parameters" in config
    assert config["rope_parameters"].get("rope_type", "default") == "default"


# in the test command: TP=2 past the original context, PP=2 at it (TP=1 past it: the test above)
@pytest.mark.parametrize(("options", "tiny"), [
    pytest.param(SIZES[0], LONG, marks=pytest.mark.slow), pytest.param(SIZES[0], SHORT, marks=pytest.mark.slow),
    (SIZES[1], LONG), pytest.param(SIZES[1], SHORT, marks=pytest.mark.slow),
    pytest.param(SIZES[2], LONG, marks=pytest.mark.slow), (SIZES[2], SHORT),
], ids=["tp1-long", "tp1-short", "tp2-long", "tp2-short", "pp2-long", "pp2-short"])
def test_phi3_5_matches_hf_on_both_sides_of_its_original_context(phi3_tree, tmp_path, options, tiny):
    options = VerifyOptions(tiny=tiny, tensor_parallel=options.tensor_parallel,
                            pipeline_parallel=options.pipeline_parallel, kinds=options.kinds)
    passed(verify(PHI3_5_16, phi3_tree, tmp_path, options), "Phi3_5", options)


@pytest.mark.slow
def test_the_bundled_phi3_5_matches_hf(phi3_tree, tmp_path):
    """Phi-3.5 as published: an original context of 4096, so verify's 32 positions take the short list."""
    passed(verify(PHI3_5, phi3_tree, tmp_path, VerifyOptions()), "Phi3_5", VerifyOptions())
    assert hf_files(tmp_path)[0]["original_max_position_embeddings"] == 4096


SHORT_LINE = "    short = 1.0 / (torch.tensor(short_factor, dtype=torch.float32) * theta ** exponents)\n"
LONG_LINE = "    long = 1.0 / (torch.tensor(long_factor, dtype=torch.float32) * theta ** exponents)\n"


@pytest.mark.parametrize("tiny", [LONG, pytest.param(SHORT, marks=pytest.mark.slow)], ids=["long", "short"])
def test_longrope_with_its_lists_swapped_fails_at_the_rotary_embedding(phi3_tree, tmp_path, tiny):
    rotary = "megatron/model/rotary_embedding.py"
    tree = edited_copy(phi3_tree, tmp_path / "tree",
                       (rotary, SHORT_LINE, SHORT_LINE.replace("(short_factor", "(long_factor")),
                       (rotary, LONG_LINE, LONG_LINE.replace("(long_factor", "(short_factor")))
    first = first_divergence(verify(PHI3_5_16, tree, tmp_path / "verify", VerifyOptions(tiny=tiny, kinds=("model",))))
    assert first.name == f"{LAYER0}.attention.rotary_emb", first
    assert first.what.startswith("rotary position embedding")
