"""`porter verify` for Qwen3 and OLMo-2 on one tree holding both ports, each against its own HF class:
Qwen3ForCausalLM (a per-head q/k norm, head_dim 32 for 64 / 4, 2 key/value heads of 4, untied) and
Olmo2ForCausalLM (post-norm layers, a q/k norm over the whole projection) at TP=1, TP=2 and PP=2; and
ports broken on purpose fail and name the module that differs: the q/k norm after rotary instead of
before it, the whole-projection norm without its all-reduce at TP=2 (each rank normalising its own
heads), the attention's post-norm after the residual add instead of before it."""

import json

import pytest
from safetensors import safe_open

from porter.catalog import load_spec
from porter.verify.parity import VerifyOptions, verify
from tests.helpers.trees import edited_copy

QWEN3, OLMO2 = load_spec("qwen3"), load_spec("olmo2")
LAYER0 = "language_model.encoder.layers.0"
TP1, TP2, PP2 = VerifyOptions(), VerifyOptions(tensor_parallel=2), VerifyOptions(pipeline_parallel=2, kinds=("pipe",))


def passed(result, prefix, options):
    classes = [f"{prefix}Model", f"{prefix}ModelPipe"] if options.pipeline_parallel is None else [f"{prefix}ModelPipe"]
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
        assert not [p for p in r.probes if p.diverges]
        print(f"{r.model_class} TP={r.tensor_parallel} PP={r.pipeline_parallel}: max |dlogit| {r.max_logit_diff:.3g}")
    return result


def hf_names(folder):
    with safe_open(str(folder / "hf" / "model.safetensors"), "pt") as weights:
        return {name: weights.get_slice(name).get_shape() for name in weights.keys()}


@pytest.mark.parametrize("options", [TP1, TP2, PP2],
                         ids=["tp1", "tp2", "pp2"])
def test_qwen3_with_its_per_head_qk_norm_matches_hf(qwen3_olmo2_tree, tmp_path, options):
    result = passed(verify(QWEN3, qwen3_olmo2_tree, tmp_path, options), "Qwen3", options)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["tie_word_embeddings"] is False
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"]) == (2, 4, 32)
    names = hf_names(tmp_path)
    assert names["model.layers.0.self_attn.q_norm.weight"] == names["model.layers.0.self_attn.k_norm.weight"] == [32]
    assert not [n for n in names if n.endswith(".bias")]
    probes = [p.name for p in result.results[0].probes]
    assert f"{LAYER0}.attention.q_layernorm" in probes and f"{LAYER0}.attention.k_layernorm" in probes


@pytest.mark.parametrize("options", [TP1, TP2, PP2],
                         ids=["tp1", "tp2", "pp2"])
def test_olmo2_with_post_norm_and_its_whole_projection_qk_norm_matches_hf(qwen3_olmo2_tree, tmp_path, options):
    """At TP=2 each rank holds 2 of the 4 heads and half of each q/k norm weight: the mean of squares
    is all-reduced."""
    result = passed(verify(OLMO2, qwen3_olmo2_tree, tmp_path, options), "Olmo2", options)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["Olmo2ForCausalLM"] and config["rope_parameters"]["rope_theta"] == 500000
    names = hf_names(tmp_path)
    assert names["model.layers.0.self_attn.q_norm.weight"] == names["model.layers.0.self_attn.k_norm.weight"] == [64]
    assert "model.layers.0.post_feedforward_layernorm.weight" in names
    assert "model.layers.0.input_layernorm.weight" not in names
    probes = [p.name for p in result.results[0].probes]
    assert f"{LAYER0}.mlp_output_layernorm" in probes and f"{LAYER0}.input_layernorm" not in probes


QK_NORM = """        # Query/key norm: q [sq, b, np, hn] and k [sq, b, ng, hn], before rotary.
        if self.q_layernorm is not None:
            query_layer = self.q_layernorm(query_layer)
            key_layer = self.k_layernorm(key_layer)
"""
ROTARY = """        # Rotary position embedding: rotate query and key [sq, b, np, hn].
        if self.rotary_emb is not None:
            offset = 0 if layer_past is None else layer_past[0].size(0)  # cached keys are rotated already
            query_layer, key_layer = self.rotary_emb(query_layer, key_layer, offset=offset)
"""
ALL_REDUCE = "            squares = _SumOverRanks.apply(squares, group)\n"
ATTENTION_POST_NORM = "            attention_output = self.attention_output_layernorm(attention_output)\n"
PRE_MLP_NORM = "        layernorm_output = self.post_attention_layernorm(layernorm_input)\n"
# a port missing one of the differences: (spec, verify options, the edits, the module verify must name)
BREAKS = {
    "qk norm after rotary": (QWEN3, TP1, [("megatron/model/transformer.py", QK_NORM + ROTARY, ROTARY + QK_NORM)],
                             f"{LAYER0}.attention.q_layernorm"),
    "qk norm per rank at tp2": (OLMO2, TP2, [("megatron/model/qk_norm.py", ALL_REDUCE, "            pass\n")],
                                f"{LAYER0}.attention.q_layernorm"),
    "post-norm after the residual add": (OLMO2, TP1, [
        ("megatron/model/transformer.py", ATTENTION_POST_NORM, "            pass\n"),
        ("megatron/model/transformer.py", PRE_MLP_NORM,
         "        if self.attention_output_layernorm is not None:\n"
         "            layernorm_input = self.attention_output_layernorm(layernorm_input)\n" + PRE_MLP_NORM)],
        f"{LAYER0}.attention_output_layernorm"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_names_the_module_of_a_broken_qwen3_or_olmo2_difference(qwen3_olmo2_tree, tmp_path, name):
    spec, options, edits, module = BREAKS[name]
    tree = edited_copy(qwen3_olmo2_tree, tmp_path / "tree", *edits)
    result = verify(spec, tree, tmp_path / "verify", VerifyOptions(tensor_parallel=options.tensor_parallel,
                                                                     kinds=("model",)))
    (r,) = result.results
    assert not result.passed and r.max_logit_diff > 1e-3 and not r.structure
    first = r.first_divergence
    assert first is not None and first.name == module, [(p.name, p.max_diff) for p in r.probes]
    print(f"{name}: first divergence {first.name} ({first.max_diff:.3g}), max |dlogit| {r.max_logit_diff:.3g}")
