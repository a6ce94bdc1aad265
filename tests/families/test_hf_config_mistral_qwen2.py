"""Mistral's and Qwen2's HF config.json as MODEL: the spec each describes, what porter refuses by
field (a window on some layers only, a window on a class without one), and diff/apply/verify of
a tree ported from the configs themselves (shaped like the published Mistral-7B-v0.3 and
Qwen2.5-0.5B ones)."""

import json

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.errors import PorterError
from porter.hf_config import hf_config_of
from porter.verify.parity import VerifyOptions, verify
from tests.conftest import copy_sample_tree

# Mistral-7B-v0.3's config.json as published: no window (null), rotary base 1e6
MISTRAL_7B_V03 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.42.0.dev0",
    "use_cache": True, "vocab_size": 32768,
}
# v0.1: a 4096-position window, rotary base 10000
MISTRAL_7B_V01 = {**MISTRAL_7B_V03, "sliding_window": 4096, "rope_theta": 10000.0, "vocab_size": 32000}
# Qwen2.5-0.5B's config.json as published: no attention_bias field (the q, k, v biases are in
# Qwen2's code), a window that use_sliding_window leaves off, tied embeddings
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
    "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
    "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
    "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}


def model_folder(tmp_path, config, name, tokenizer):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / tokenizer).write_text("{}")
    return folder


def test_mistral_v03_is_the_mistral_family_without_a_window(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, MISTRAL_7B_V03, "Mistral-7B-v0.3", "tokenizer.model")))
    assert spec.hf_class == "MistralForCausalLM" and "(family: mistral)" in spec.description
    assert spec["attention.sliding_window"] == 0  # null: none, where the family's own default has one
    assert spec["attention.num_query_groups"] == 8 and spec["position_embedding.rope_theta"] == 1e6
    assert spec["mlp.ffn_hidden_size"] == 14336 and spec["sizes.vocab_size"] == 32768
    assert not spec["embeddings.tied"] and not spec["linear.bias"] and spec["tokenizer.type"] == "sentencepiece"
    assert hf_config_of(spec)["sliding_window"] is None  # and back: null, not MistralConfig's 4096


def test_mistral_v01_keeps_its_window():
    spec = load_spec("mistral")
    v01 = spec_from(MISTRAL_7B_V01)
    assert v01["attention.sliding_window"] == 4096 == spec["attention.sliding_window"]
    assert v01["position_embedding.rope_theta"] == 10000.0
    assert hf_config_of(spec)["sliding_window"] == 4096


def spec_from(config):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model"
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        return load_spec(str(path))


def test_qwen25_is_the_qwen2_family_with_its_qkv_bias_from_the_spec(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, QWEN25_05B, "Qwen2.5-0.5B", "tokenizer.json")))
    assert spec.hf_class == "Qwen2ForCausalLM" and "(family: qwen2)" in spec.description
    assert spec["linear.qkv_bias"] is True and spec["linear.bias"] is False
    assert spec["linear.attention_output_bias"] is None and spec["linear.mlp_bias"] is None
    assert spec["embeddings.tied"] and spec["attention.num_query_groups"] == 2
    assert spec["attention.sliding_window"] is None  # use_sliding_window: false
    assert spec["tokenizer.type"] == "hf" and not spec["tokenizer.add_bos"]
    config = hf_config_of(spec)
    assert "attention_bias" not in config and "mlp_bias" not in config
    assert config["use_sliding_window"] is False and config["tie_word_embeddings"] is True


def test_a_qwen2_window_on_every_layer_is_ported():
    spec = spec_from({**QWEN25_05B, "use_sliding_window": True, "max_window_layers": 0, "sliding_window": 4096})
    assert spec["attention.sliding_window"] == 4096
    config = hf_config_of(spec)
    assert (config["use_sliding_window"], config["sliding_window"], config["max_window_layers"]) == (True, 4096, 0)


@pytest.mark.parametrize(("change", "field"), [
    ({"use_sliding_window": True, "max_window_layers": 21}, "max_window_layers"),
    ({"layer_types": ["full_attention"] * 12 + ["sliding_attention"] * 12, "use_sliding_window": True}, "layer_types"),
])
def test_a_window_on_some_layers_only_is_refused_by_field(tmp_path, change, field):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**QWEN25_05B, **change}))
    with pytest.raises(PorterError) as caught:
        load_spec(str(folder))
    error = caught.value
    assert field in error.construct and field in error.found and error.file.endswith("config.json")


def test_a_window_on_a_class_without_one_is_refused_by_field():
    spec = load_spec("llama").with_values(**{"attention.sliding_window": 8})
    with pytest.raises(PorterError) as caught:
        hf_config_of(spec)
    assert caught.value.construct == "attention.sliding_window" and "LlamaForCausalLM" in caught.value.message


@pytest.fixture(scope="module")
def config_models(tmp_path_factory):
    """The two configs' folders, and a copy of the sample tree with both ported from them."""
    root = tmp_path_factory.mktemp("config_models")
    mistral = model_folder(root, MISTRAL_7B_V03, "Mistral-7B-v0.3", "tokenizer.model")
    qwen = model_folder(root, QWEN25_05B, "Qwen2.5-0.5B", "tokenizer.json")
    tree = copy_sample_tree(root / "Megatron-DeepSpeed")
    return mistral, qwen, tree


@pytest.mark.parametrize(("which", "script", "keys"), [
    (0, "pretrain_mistral_7b_v0_3.py", ["sliding_window", "num_query_groups"]),
    (1, "pretrain_qwen2_5_0_5b.py", ["qkv_bias", "no_bias"]),
], ids=["mistral-7b-v0.3", "qwen2.5-0.5b"])
def test_each_config_diffs_applies_and_verifies(config_models, tmp_path, which, script, keys):
    folder, tree = config_models[which], config_models[2]
    runner = CliRunner()
    diff = runner.invoke(app, ["diff", str(folder), "--target", str(tree), "--stat"])
    assert diff.exit_code == 1, diff.output
    assert f"{script} (new)" in diff.output and all(f"{key}:" in diff.output for key in keys)
    applied = runner.invoke(app, ["apply", str(folder), "--target", str(tree)])
    assert applied.exit_code == 0, applied.output
    result = verify(load_spec(str(folder)), tree, tmp_path, VerifyOptions(kinds=("model",)))
    assert result.passed, result.as_dict()
    print(f"{result.results[0].model_class}: max |dlogit| {result.results[0].max_logit_diff:.3g}")


def test_a_qwen2_config_without_use_sliding_window_has_qwen2s_default_off():
    config = {k: v for k, v in QWEN25_05B.items() if k != "use_sliding_window"}
    assert spec_from({**config, "max_window_layers": 0})["attention.sliding_window"] is None
