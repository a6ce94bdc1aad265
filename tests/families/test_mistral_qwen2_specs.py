"""The mistral and qwen2 specs: bundled with their numbers, listed by `porter list`, written as
TOML and read back the same, and a bad window named by field."""

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec, parse
from porter.cli import app
from porter.errors import PorterError
from porter.spec import spec_toml


def test_porter_list_shows_mistral_and_qwen2_with_their_differences():
    out = CliRunner().invoke(app, ["list"]).output
    mistral, qwen2 = out.split("\nmistral  ")[1].split("\n\n")[0], out.split("\nqwen2  ")[1].split("\n\n")[0]
    assert "MistralModel, pretrain_mistral.py" in mistral and "attention.sliding_window       4096" in mistral
    assert "attention.num_query_groups     8" in mistral and "position_embedding.rope_theta" not in mistral  # v0.1: 10000
    assert "Qwen2Model, pretrain_qwen2.py" in qwen2 and "linear.qkv_bias                True" in qwen2
    assert "linear.bias                    False" in qwen2 and "tokenizer.type                 'hf'" in qwen2


def test_the_specs_name_their_hf_classes_and_numbers():
    mistral, qwen2 = load_spec("mistral"), load_spec("qwen2")
    assert (mistral.hf_class, qwen2.hf_class) == ("MistralForCausalLM", "Qwen2ForCausalLM")
    assert mistral["attention.sliding_window"] == 4096 and not mistral["embeddings.tied"]
    assert qwen2["attention.sliding_window"] is None and qwen2["embeddings.tied"]
    assert (qwen2["linear.qkv_bias"], qwen2["linear.attention_output_bias"], qwen2["linear.mlp_bias"]) == (True, None, None)


@pytest.mark.parametrize("name", ["mistral", "qwen2"])
def test_a_spec_written_as_toml_loads_back_the_same(name, tmp_path):
    spec = load_spec(name)
    path = tmp_path / f"{name}.toml"
    path.write_text(spec_toml(spec))
    assert dict(load_spec(str(path)).values) == dict(spec.values)


@pytest.mark.parametrize("value", [-1, 2.5, "4k"])
def test_a_bad_window_is_named(value):
    with pytest.raises(PorterError) as caught:
        parse({"model": {"name": "x", "class_prefix": "X"}, "attention": {"sliding_window": value}}, "bad.toml")
    assert caught.value.construct == "attention.sliding_window" and caught.value.file == "bad.toml"
