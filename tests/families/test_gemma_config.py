"""Gemma as data: the bundled spec, its config.json as MODEL (both activation spellings), refusals by field."""

import json

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.errors import PorterError
from porter.spec import spec_toml

# gemma-7b's config.json as published (after the activation fix: hidden_activation beside the legacy hidden_act)
GEMMA_7B = {
    "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 2,
    "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 24576, "max_position_embeddings": 8192,
    "model_type": "gemma", "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 16,
    "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
    "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
}
# gemma-2b's as first released: only the legacy hidden_act "gelu", which HF reads as the tanh GELU
GEMMA_2B = {**{k: v for k, v in GEMMA_7B.items() if k != "hidden_activation"},
            "hidden_size": 2048, "intermediate_size": 16384, "num_attention_heads": 8, "num_hidden_layers": 18,
            "num_key_value_heads": 1}


def model_folder(tmp_path, config, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_gemma_spec_is_bundled_with_2bs_numbers_and_multi_query_attention():
    spec = load_spec("gemma")
    assert spec.hf_class == "GemmaForCausalLM" and spec.model_class == "GemmaModel"
    assert spec["activation.type"] == "geglu" and spec["norm.offset"] == 1.0 and spec["embeddings.scale"]
    assert spec["embeddings.tied"] and not spec["linear.bias"] and spec["norm.eps"] == 1e-6
    assert (spec["attention.head_dim"], spec["attention.num_query_groups"], spec["mlp.ffn_hidden_size"]) == (256, 1, 16384)
    assert spec["tokenizer.type"] == "sentencepiece" and spec["tokenizer.add_bos"]
    assert dict(load_spec_from_toml(spec_toml(spec)).values) == dict(spec.values)


def load_spec_from_toml(text):
    import tomllib

    from porter.catalog import parse

    return parse(tomllib.loads(text))


def test_porter_list_shows_gemma_and_its_differences():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    gemma = result.output[result.output.index("gemma "):]
    for line in ("activation.type", "'geglu'", "norm.offset", "embeddings.scale", "attention.head_dim",
                 "attention.num_query_groups"):
        assert line in gemma.split("\n\n")[0], line


def test_gemma_7b_config_is_the_gemma_family_with_its_own_numbers(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, GEMMA_7B, "gemma-7b")))
    assert spec.hf_class == "GemmaForCausalLM" and "(family: gemma)" in spec.description
    assert spec["activation.type"] == "geglu"  # hidden_activation: gelu_pytorch_tanh
    assert spec["attention.head_dim"] == 256 and spec["attention.num_query_groups"] is None  # 16 of 16: multi-head
    assert spec["mlp.ffn_hidden_size"] == 24576 and spec["embeddings.tied"]
    assert spec["norm.offset"] == 1.0 and spec["embeddings.scale"]  # implicit in HF's Gemma: the family's
    assert (spec["sizes.num_layers"], spec["sizes.hidden_size"], spec["sizes.vocab_size"]) == (28, 3072, 256000)


def test_gemma_2b_config_with_the_legacy_activation_spelling(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, GEMMA_2B, "gemma-2b")))
    assert spec["activation.type"] == "geglu"  # "gelu" in a Gemma config is the tanh GELU, as HF reads it
    assert spec["attention.num_query_groups"] == 1  # multi-query
    assert spec["attention.head_dim"] is None  # 2048 / 8 = 256: the family's 256 is not carried over blindly
    assert spec["mlp.ffn_hidden_size"] == 16384


def test_a_config_transformers_5_saved_is_a_model_too(tmp_path):
    from transformers import GemmaConfig

    saved = GemmaConfig(hidden_size=2048, intermediate_size=16384, num_attention_heads=8, num_hidden_layers=18,
                        num_key_value_heads=1, head_dim=256).to_dict()
    saved["architectures"] = ["GemmaForCausalLM"]
    assert "use_bidirectional_attention" in saved and "rope_parameters" in saved
    spec = load_spec(str(model_folder(tmp_path, saved, "gemma-2b-new")))
    assert spec["activation.type"] == "geglu" and spec["attention.num_query_groups"] == 1


@pytest.mark.parametrize(("change", "field"), [
    ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ({"hidden_act": "relu", "hidden_activation": None}, "activation.type"),
])
def test_what_porter_cannot_honour_in_a_gemma_config_is_refused_by_field(tmp_path, change, field):
    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, {**GEMMA_7B, **change}, "gemma")))
    error = caught.value
    assert field in f"{error.construct} {error.found} {error.message}", error
    assert error.file.endswith("config.json")


def test_a_plain_gelu_in_a_llama_config_is_refused_not_read_as_swiglu(tmp_path):
    from tests.families.test_hf_config import LLAMA31_8B

    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, {**LLAMA31_8B, "hidden_act": "gelu"}, "llama-gelu")))
    assert caught.value.construct == "activation.type" and "gated gelu" in caught.value.found


def test_a_norm_offset_needs_rmsnorm():
    from porter.catalog import parse

    with pytest.raises(PorterError) as caught:
        parse({"model": {"name": "x", "class_prefix": "X"}, "norm": {"offset": 1.0}}, "bad.toml")
    assert caught.value.construct == "norm.offset" and caught.value.file == "bad.toml"
