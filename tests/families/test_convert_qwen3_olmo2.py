"""`porter convert` for Qwen3 and OLMo-2: HF -> Megatron (TP=2, PP=2) -> HF bit-exact, every norm weight
included: Qwen3's per-head q/k norms whole on both tensor-parallel ranks, OLMo-2's whole-projection
q/k norms split by heads, its post-attention and post-feed-forward norms, and no input norm."""

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify
from tests.families.test_convert_mistral_qwen2 import save_tiny

LAYER = "release/layer_02-model_{:02d}-model_states.pt"  # the first transformer layer of the pipe, TP rank r


def round_trip(tree, tmp_path, family, hf):
    runner = CliRunner()
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", family,
                               "--target", str(tree), "--tp", "2", "--pp", "2"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", family, "--target", str(tree)])
    assert done.exit_code == 0, done.output
    (_, state), (config, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    ranks = [torch.load(ckpt / LAYER.format(r), weights_only=False) for r in range(2)]
    return state, config, ranks, ckpt


def check_checkpoint(tree, tmp_path, family, ckpt):
    """The tree loads the checkpoint with its own --load and gives HF's logits."""
    result = verify(load_spec(family), tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()
    print(f"{family} checkpoint TP=2 PP=2: max |dlogit| {result.results[0].max_logit_diff:.3g}")


@pytest.mark.parametrize("load", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["convert", "and-load"])
def test_qwen3_round_trips_bit_exact_with_its_per_head_qk_norms(qwen3_olmo2_tree, tmp_path, load):
    hf = save_tiny("Qwen3ForCausalLM", tmp_path / "hf", head_dim=32, rope_theta=1e6, tie_word_embeddings=False)
    state, config, ranks, ckpt = round_trip(qwen3_olmo2_tree, tmp_path, "qwen3", hf)
    assert config["head_dim"] == 32 and config["architectures"] == ["Qwen3ForCausalLM"]
    for x in "qk":  # [head_dim], whole on each rank: HF's tensor itself
        hf_norm = state[f"model.layers.0.self_attn.{x}_norm.weight"]
        assert hf_norm.shape == (32,)
        for rank in ranks:
            assert torch.equal(rank[f"attention.{x}_layernorm.weight"], hf_norm)
    if load:
        check_checkpoint(qwen3_olmo2_tree, tmp_path, "qwen3", ckpt)


@pytest.mark.parametrize("load", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["convert", "and-load"])
def test_olmo2_round_trips_bit_exact_with_its_post_norms_and_split_qk_norms(qwen3_olmo2_tree, tmp_path, load):
    hf = save_tiny("Olmo2ForCausalLM", tmp_path / "hf", num_key_value_heads=4, rope_theta=5e5,
                   tie_word_embeddings=False, rms_norm_eps=1e-6)
    state, config, ranks, ckpt = round_trip(qwen3_olmo2_tree, tmp_path, "olmo2", hf)
    assert config["architectures"] == ["Olmo2ForCausalLM"]
    assert not [k for k in state if "input_layernorm" in k]
    for x, width in (("q", 64), ("k", 64)):  # all heads' channels, each rank its own heads' half
        hf_norm = state[f"model.layers.0.self_attn.{x}_norm.weight"]
        assert hf_norm.shape == (width,)
        for rank, half in zip(ranks, hf_norm.chunk(2), strict=True):
            assert torch.equal(rank[f"attention.{x}_layernorm.weight"], half)
    for tree_key, hf_key in (("attention_output_layernorm", "post_attention_layernorm"),
                             ("mlp_output_layernorm", "post_feedforward_layernorm")):
        for rank in ranks:
            assert torch.equal(rank[f"{tree_key}.weight"], state[f"model.layers.0.{hf_key}.weight"])
    assert not [k for k in ranks[0] if k.startswith(("input_layernorm", "post_attention_layernorm"))]
    if load:
        check_checkpoint(qwen3_olmo2_tree, tmp_path, "olmo2", ckpt)
