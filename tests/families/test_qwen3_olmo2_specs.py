"""The qwen3 and olmo2 specs: each equal to one released checkpoint's config.json (Qwen3-8B,
OLMo-2-1124-7B), those files and Qwen3-0.6B's working as MODEL (read as transformers reads them),
and `porter diff --stat` naming each new spec key."""

import json

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.hf_config import hf_config_of
from tests.helpers.training import SAMPLE_TREE

# the published config.json files, as released
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 12288, "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN3_0_6B = {**QWEN3_8B, "hidden_size": 1024, "intermediate_size": 3072, "max_window_layers": 28,
              "num_attention_heads": 16, "num_hidden_layers": 28, "tie_word_embeddings": True}
OLMO2_7B = {
    "architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": None,
    "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "olmo2", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "pad_token_id": 100277, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 500000, "tie_word_embeddings": False, "torch_dtype": "float32",
    "transformers_version": "4.47.0.dev0", "use_cache": True, "vocab_size": 100352,
}
# what the specs must say of each (the fields porter builds from)
ARCHITECTURE = ("attention.qk_norm", "norm.placement", "attention.num_query_groups", "linear.bias",
                "linear.qkv_bias", "embeddings.tied", "position_embedding.rope_theta", "norm.eps", "activation.type",
                "sizes.num_layers", "sizes.hidden_size", "sizes.num_attention_heads", "sizes.vocab_size",
                "sizes.max_position_embeddings")


def model_folder(tmp_path, config, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("family", "config"), [("qwen3", QWEN3_8B), ("olmo2", OLMO2_7B)])
def test_the_bundled_spec_is_the_released_checkpoint(tmp_path, family, config):
    bundled, read = load_spec(family), load_spec(str(model_folder(tmp_path, config, family)))
    assert f"closest family: {family}" in read.description and read.hf_class == bundled.hf_class
    for key in ARCHITECTURE:
        assert bundled[key] == read[key], key
    for spec in (bundled, read):  # and both say what the config says, as transformers' class reads it
        hf = hf_config_of(spec)
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                    "vocab_size", "max_position_embeddings", "tie_word_embeddings", "hidden_act"):
            assert hf[key] == config[key], (spec.name, key)
        assert hf["rope_parameters"]["rope_theta"] == config["rope_theta"]
        assert hf.get("head_dim", 128) == config.get("head_dim", 128)


def test_qwen3_configs_as_model(tmp_path):
    eight, small = (load_spec(str(model_folder(tmp_path, c, n))) for c, n in ((QWEN3_8B, "Qwen3-8B"),
                                                                              (QWEN3_0_6B, "Qwen3-0.6B")))
    assert eight["attention.qk_norm"] == small["attention.qk_norm"] == "per_head"
    assert eight["attention.head_dim"] is None and hf_config_of(eight)["head_dim"] == 128  # 4096 / 32, said outright
    assert small["attention.head_dim"] == 128  # not 1024 / 16 = 64
    assert small["embeddings.tied"] and not eight["embeddings.tied"]
    assert small["attention.num_query_groups"] == 8 and small["mlp.ffn_hidden_size"] == 3072
    assert not small["linear.bias"] and not small["linear.qkv_bias"]  # Qwen2's QKV bias is gone


def test_olmo2_config_as_model(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, OLMO2_7B, "OLMo-2-1124-7B")))
    assert (spec["norm.placement"], spec["attention.qk_norm"]) == ("post", "projection")
    assert spec["attention.num_query_groups"] is None and spec["position_embedding.rope_theta"] == 500000.0
    assert spec["mlp.ffn_hidden_size"] == 11008 and spec["norm.eps"] == 1e-6


@pytest.mark.parametrize(("family", "keys"), [
    ("qwen3", {"qk_norm": "attention.qk_norm"}),
    ("olmo2", {"qk_norm": "attention.qk_norm", "norm_placement": "norm.placement"}),
])
def test_porter_diff_stat_names_each_new_spec_key(family, keys):
    result = CliRunner().invoke(app, ["diff", family, "--target", str(SAMPLE_TREE), "--stat"])
    assert result.exit_code == 1, result.output  # changes to make
    lines = result.output.split(f"by spec key ({family}):")[1].splitlines()
    for switch, field in keys.items():
        line = next((x for x in lines if x.strip().startswith(f"{switch}:")), None)
        assert line is not None and line.rstrip().endswith(field), (switch, result.output)
