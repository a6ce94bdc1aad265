"""An HF config.json (or the folder holding it) as MODEL: the inferred spec, refusals by field."""

import json

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.errors import PorterError

# LLaMA-3.1-8B's config.json as Meta published it (transformers 4 spelling: rope_theta, rope_scaling)
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}


def model_folder(tmp_path, config, name="Meta-Llama-3.1-8B", tokenizer=None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if tokenizer:
        (folder / tokenizer).write_text("{}")
    return folder


def test_llama31_config_is_the_llama3_family_with_its_own_numbers(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, LLAMA31_8B)))
    assert spec.hf_class == "LlamaForCausalLM" and "(family: llama)" in spec.description
    assert spec.name == "meta_llama_3_1_8b" and spec.script == "pretrain_meta_llama_3_1_8b.py"
    assert spec["attention.num_query_groups"] == 8
    assert spec["position_embedding.rope_theta"] == 500000.0
    assert spec["position_embedding.rope_scaling.type"] == "llama3"
    assert spec["position_embedding.rope_scaling.factor"] == 8.0
    assert spec["mlp.ffn_hidden_size"] == 14336
    assert (spec["sizes.num_layers"], spec["sizes.hidden_size"], spec["sizes.vocab_size"]) == (32, 4096, 128256)
    assert spec["norm.eps"] == 1e-5 and not spec["embeddings.tied"] and not spec["linear.bias"]


def test_transformers5_rope_parameters_read_the_same(tmp_path):
    from transformers import LlamaConfig

    fields = {k: v for k, v in LLAMA31_8B.items() if k not in ("rope_scaling", "rope_theta")}
    fields["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    new = LlamaConfig(**{k: v for k, v in fields.items() if k not in ("architectures", "model_type")}).to_dict()
    assert "rope_parameters" in new and "rope_scaling" not in new
    one = load_spec(str(model_folder(tmp_path, LLAMA31_8B, "old")))
    two = load_spec(str(model_folder(tmp_path, new, "new")))
    assert {k: v for k, v in one.values.items()} == {k: v for k, v in two.values.items()}


def test_a_llama2_config_is_the_llama2_family(tmp_path):
    config = {**LLAMA31_8B, "num_key_value_heads": 32, "rope_theta": 10000.0, "intermediate_size": 11008,
              "vocab_size": 32000, "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2}
    del config["rope_scaling"]
    spec = load_spec(str(model_folder(tmp_path, config, "Llama-2-7b-hf", tokenizer="tokenizer.model")))
    assert "(family: llama)" in spec.description
    assert spec["attention.num_query_groups"] is None
    assert spec["position_embedding.rope_scaling.type"] == "none"
    assert spec["tokenizer.type"] == "sentencepiece"  # the folder's tokenizer.model says so


@pytest.mark.parametrize(("change", "field"), [
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, "rope_scaling.rope_type"),
    ({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}, "model_type"),
    ({"quantization_config": {"quant_method": "fp8"}}, "quantization_config"),
    ({"num_key_value_heads": 5}, "attention.num_query_groups"),
])
def test_what_porter_cannot_honour_is_refused_by_field(tmp_path, change, field):
    folder = model_folder(tmp_path, {**LLAMA31_8B, **change})
    with pytest.raises(PorterError) as caught:
        load_spec(str(folder))
    error = caught.value
    assert field in f"{error.construct} {error.found} {error.message}", error
    assert error.file.endswith("config.json")


def test_a_malformed_config_is_refused_with_its_position(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(PorterError) as caught:
        load_spec(str(folder))
    assert "line 2" in caught.value.found and caught.value.file.endswith("config.json")


def test_porter_spec_prints_toml_that_ports_the_same(tmp_path):
    folder = model_folder(tmp_path, LLAMA31_8B)
    result = CliRunner().invoke(app, ["spec", str(folder / "config.json")])
    assert result.exit_code == 0, result.output
    kept = tmp_path / "kept.toml"
    kept.write_text(result.output)
    assert dict(load_spec(str(kept)).values) == dict(load_spec(str(folder)).values)
    bad = CliRunner().invoke(app, ["spec", str(model_folder(tmp_path, {**LLAMA31_8B, "hidden_act": "relu"}, "x"))])
    assert bad.exit_code == 2 and "activation.type" in bad.output
