"""Gemma-2 as data: the bundled spec is gemma-2-9b's config.json; published configs read as
transformers reads them (the window on every other layer where the file has no layer_types);
every new field written back; what porter cannot port refused by field."""

import json

import pytest

from porter.catalog import load_spec
from porter.errors import PorterError
from porter.hf_config import hf_config_of

# gemma-2-9b's config.json as published (sliding_window_size: an old name nothing reads)
GEMMA2_9B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
    "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 16,
    "num_hidden_layers": 42, "num_key_value_heads": 8, "pad_token_id": 0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "sliding_window_size": 4096,
    "torch_dtype": "float32", "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 256000,
}
# gemma-2-27b's: query_pre_attn_scalar 144 for heads of 128
GEMMA2_27B = {**GEMMA2_9B, "hidden_size": 4608, "intermediate_size": 36864, "num_attention_heads": 32,
              "num_hidden_layers": 46, "num_key_value_heads": 16, "head_dim": 128, "query_pre_attn_scalar": 144}


def spec_from(tmp_path, config, name="gemma-2-9b"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return load_spec(str(folder))


def test_gemma_2_9b_config_json_is_the_bundled_spec(tmp_path):
    spec, bundled = spec_from(tmp_path, GEMMA2_9B), load_spec("gemma2")
    assert spec.hf_class == bundled.hf_class == "Gemma2ForCausalLM"
    biases = ("linear.qkv_bias", "linear.attention_output_bias")  # unset (no bias) or false, as the file says
    assert {k: v for k, v in spec.values.items() if k not in biases} == {
        k: v for k, v in bundled.values.items() if k not in biases}
    assert not any(spec[k] or bundled[k] for k in biases)
    assert (bundled["norm.placement"], bundled["attention.softcap"], bundled["logits.softcap"]) == ("sandwich", 50.0, 30.0)
    assert (bundled["attention.sliding_window"], bundled["attention.sliding_window_pattern"]) == (4096, 2)
    assert (bundled["attention.query_pre_attn_scalar"], bundled["attention.head_dim"]) == (256, 256)


def test_gemma_2_27b_scales_its_scores_by_144_not_its_head_size(tmp_path):
    spec = spec_from(tmp_path, GEMMA2_27B, "gemma-2-27b")
    assert (spec["attention.query_pre_attn_scalar"], spec["attention.head_dim"]) == (144, 128)
    assert spec["attention.num_query_groups"] == 16 and spec["sizes.num_layers"] == 46


def test_every_gemma2_field_goes_back_to_the_config_transformers_reads():
    from transformers import Gemma2Config

    config = hf_config_of(load_spec("gemma2"))
    read = Gemma2Config(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    published = Gemma2Config(**{k: v for k, v in GEMMA2_9B.items() if k not in ("architectures", "model_type")})
    for field in ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "sliding_window",
                  "layer_types", "head_dim", "num_key_value_heads", "rms_norm_eps", "hidden_activation"):
        assert getattr(read, field) == getattr(published, field), field
    assert read.layer_types[:3] == ["sliding_attention", "full_attention", "sliding_attention"]


def test_a_gemma2_config_without_caps_or_window_is_ported_without_them(tmp_path):
    """null asks for none, where Gemma2Config's own default would cap at 50 and 30 and window every other layer."""
    spec = spec_from(tmp_path, {**GEMMA2_9B, "attn_logit_softcapping": None, "final_logit_softcapping": None,
                                "sliding_window": None})
    assert spec["attention.softcap"] is None and spec["logits.softcap"] is None
    assert not spec["attention.sliding_window"] and spec["attention.sliding_window_pattern"] is None
    config = hf_config_of(spec)
    assert config["attn_logit_softcapping"] is None and config["final_logit_softcapping"] is None
    assert config["sliding_window"] is None and set(config["layer_types"]) == {"full_attention"}


@pytest.mark.parametrize("types, pattern", [
    (["sliding_attention"] * 5 + ["full_attention"], 6),
    (["sliding_attention"] * 4, None),
])
def test_layer_types_with_a_period_become_a_pattern(tmp_path, types, pattern):
    spec = spec_from(tmp_path, {**GEMMA2_9B, "num_hidden_layers": len(types), "layer_types": types})
    assert spec["attention.sliding_window"] == 4096 and spec["attention.sliding_window_pattern"] == pattern


def test_layer_types_without_a_period_are_refused_by_field(tmp_path):
    types = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    with pytest.raises(PorterError) as caught:
        spec_from(tmp_path, {**GEMMA2_9B, "num_hidden_layers": 4, "layer_types": types})
    assert "layer_types" in caught.value.found and "--sliding-window-pattern" in caught.value.fix


@pytest.mark.parametrize("family, field, value, refused", [
    ("llama", "attention.softcap", 50.0, "attention.softcap"),
    ("llama", "logits.softcap", 30.0, "logits.softcap"),
    ("llama", "attention.query_pre_attn_scalar", 144, "attention.query_pre_attn_scalar"),
    ("mistral", "attention.sliding_window_pattern", 2, "attention.sliding_window_pattern"),
])
def test_a_gemma2_difference_on_a_class_without_it_is_refused_by_field(family, field, value, refused):
    spec = load_spec(family).with_values(**{field: value})
    with pytest.raises(PorterError) as caught:
        hf_config_of(spec)
    assert caught.value.construct == refused


@pytest.mark.parametrize("tables, field", [
    ({"attention": {"sliding_window_pattern": 2}}, "attention.sliding_window_pattern"),  # no window to place
    ({"norm": {"placement": "sandwich"}, "linear": {"bias": True}}, "linear.attention_output_bias"),
])
def test_inconsistent_gemma2_specs_are_refused_by_field(tables, field):
    from porter.catalog import parse

    with pytest.raises(PorterError) as caught:
        parse({"extends": "llama", "model": {"name": "mine", "class_prefix": "Mine"}, **tables}, "mine.toml")
    assert caught.value.construct == field
