"""The spec as numbers: the LLaMA family's specs, validation by field, the TOML round trip."""

import pytest

from porter.catalog import available_specs, load_spec, parse
from porter.differences.ffn_rule import default_ffn_hidden_size, ffn_hidden_size
from porter.errors import PorterError
from porter.spec import spec_toml


def test_the_llama_family_is_bundled_with_its_numbers():
    assert {"gpt", "llama", "llama2", "llama3"} <= set(available_specs())
    llama2, llama3 = load_spec("llama2"), load_spec("llama3")
    assert llama2["norm.eps"] == 1e-5 and llama2["attention.num_query_groups"] is None
    assert llama2["sizes.max_position_embeddings"] == 4096
    assert llama3["attention.num_query_groups"] == 8
    assert llama3["position_embedding.rope_theta"] == 500000.0
    assert llama3["position_embedding.rope_scaling.type"] == "llama3"
    assert llama3["position_embedding.rope_scaling.original_max_position_embeddings"] == 8192
    assert llama3["tokenizer.type"] == "hf" and llama3["tokenizer.add_bos"]
    assert {s.hf_class for s in (llama2, llama3, load_spec("llama"))} == {"LlamaForCausalLM"}


@pytest.mark.parametrize(("hidden", "spec", "width"), [
    (4096, "llama", 11008), (5120, "llama2", 13824), (4096, "llama3", 14336)])
def test_each_family_gets_its_models_mlp_width(hidden, spec, width):
    assert ffn_hidden_size(load_spec(spec), hidden) == width


def test_llama3_rule_gives_70b_and_405b_widths_with_their_rounding():
    assert default_ffn_hidden_size(8192, "2/3*4h", 4096, 1.3) == 28672
    assert default_ffn_hidden_size(16384, "2/3*4h", 4096, 1.2) == 53248


def _spec(**sections):
    data = {"model": {"name": "x", "class_prefix": "X"}}
    data.update(sections)
    return data


@pytest.mark.parametrize(("sections", "field"), [
    ({"attention": {"num_query_groups": 0}}, "attention.num_query_groups"),
    ({"attention": {"num_query_groups": 2.5}}, "attention.num_query_groups"),
    ({"attention": {"head_dim": "big"}}, "attention.head_dim"),
    ({"position_embedding": {"type": "rotary", "rope_scaling": {"type": "dynamic"}}}, "position_embedding.rope_scaling.type"),
    ({"position_embedding": {"rope_scaling": {"type": "llama3"}}}, "position_embedding.rope_scaling.type"),
    ({"position_embedding": {"type": "rotary", "rope_scaling": {"type": "llama3", "low_freq_factor": 4.0,
                                                                "high_freq_factor": 1.0}}},
     "position_embedding.rope_scaling.high_freq_factor"),
    ({"mlp": {"ffn_hidden_size": "3h"}}, "mlp.ffn_hidden_size"),
    ({"mlp": {"ffn_hidden_size": 14336, "ffn_multiplier": 1.3}}, "mlp.ffn_multiplier"),
    ({"linear": {"qkv_bias": "yes"}}, "linear.qkv_bias"),
    ({"tokenizer": {"type": "tiktoken"}}, "tokenizer.type"),
    ({"attention": {"sliding": 4096}}, "attention.sliding"),
])
def test_a_bad_field_is_named(sections, field):
    with pytest.raises(PorterError) as caught:
        parse(_spec(**sections), "bad.toml")
    assert caught.value.construct == field, caught.value
    assert caught.value.file == "bad.toml"


@pytest.mark.parametrize("name", ["llama", "llama2", "llama3"])
def test_a_spec_written_as_toml_loads_back_the_same(name, tmp_path):
    spec = load_spec(name)
    path = tmp_path / f"{name}.toml"
    path.write_text(spec_toml(spec))
    again = load_spec(str(path))
    assert dict(again.values) == dict(spec.values)
    assert (again.name, again.class_prefix, again.script, again.hf_class, again.training_defaults) == \
        (spec.name, spec.class_prefix, spec.script, spec.hf_class, spec.training_defaults)
