"""`porter verify` for the LLaMA family on one tree holding LLaMA-2 and LLaMA-3 side by side:
each against LlamaForCausalLM from the same config, at TP=1, TP=2 and PP=2."""

import pytest

from porter.catalog import load_spec
from porter.verify.parity import VerifyOptions, verify
from tests.helpers.trees import edited_copy

LLAMA3 = load_spec("llama3")
SCALING = "position_embedding.rope_scaling.original_max_position_embeddings"


def passed(result, classes):
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
        assert not [p for p in r.probes if p.diverges]
    return result


def test_llama2_matches_hf(families_tree, tmp_path):
    passed(verify(load_spec("llama2"), families_tree, tmp_path), ["Llama2Model", "Llama2ModelPipe"])


@pytest.mark.parametrize("options", [VerifyOptions(), VerifyOptions(tensor_parallel=2),
                                     # PP=2 with grouped-query attention: qwen3's and gemma2's PP=2 verifies
                                     pytest.param(VerifyOptions(pipeline_parallel=2, kinds=("pipe",)), marks=pytest.mark.slow)],
                         ids=["tp1", "tp2", "pp2"])
def test_llama3_with_grouped_query_attention_matches_hf(families_tree, tmp_path, options):
    passed(verify(LLAMA3, families_tree, tmp_path, options),
                    ["Llama3Model", "Llama3ModelPipe"] if options.pipeline_parallel is None else ["Llama3ModelPipe"])
    config = (tmp_path / "hf" / "config.json").read_text()
    assert '"num_key_value_heads": 2' in config and '"num_attention_heads": 4' in config  # grouped: 2 of 4
    assert '"rope_type": "llama3"' in config


@pytest.mark.slow
@pytest.mark.parametrize("options", [VerifyOptions(tensor_parallel=2), VerifyOptions(pipeline_parallel=2, kinds=("pipe",))],
                         ids=["tp2", "pp2"])
def test_llama2_at_tp2_and_pp2(families_tree, tmp_path, options):
    assert verify(load_spec("llama2"), families_tree, tmp_path, options).passed


def test_rope_scaling_whose_original_context_is_shorter_than_the_sequence(families_tree, tmp_path):
    """LLaMA-3.1 scaling with an original context of 16 for a 32-token batch: verified, and the
    same check on a port that ignores the scaling fails at the rotary embedding."""
    spec = LLAMA3.with_values(**{SCALING: 16})
    passed(verify(spec, families_tree, tmp_path / "ok", VerifyOptions(kinds=("model",))), ["Llama3Model"])

    broken = edited_copy(families_tree, tmp_path / "broken",
                         ("megatron/model/transformer.py", ", scaling=rope_scaling_of(args)", ""))
    result = verify(spec, broken, tmp_path / "bad", VerifyOptions(kinds=("model",)))
    assert not result.passed
    first = result.results[0].first_divergence
    assert first is not None and first.name.endswith("attention.rotary_emb"), first
