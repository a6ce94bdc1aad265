"""porter reads each published config.json of the battery exactly as transformers does, or
refuses it naming what the family has and porter lacks (tests/families/battery.py)."""

import copy
import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from porter.catalog import differences, load_spec
from porter.cli import app
from porter.errors import PorterError
from porter.hf_config import check_fields, hf_config_of, hf_file_of
from porter.hf_reading import OUTSIDE_FORWARD, _installed, reading, rope_parameters_of, table_entry
from tests.families.battery import BATTERY, TINY, Refused, model_folder, published


def transformers_reads(config: dict) -> dict:
    """Every field of the config as transformers' config class makes it (from_dict, as
    from_pretrained does), rope in one spelling; bookkeeping of the file itself left out."""
    from transformers import CONFIG_MAPPING
    from transformers.utils import logging

    logging.set_verbosity_error()
    out = CONFIG_MAPPING[config["model_type"]].from_dict(copy.deepcopy(config)).to_dict()
    for key in ("transformers_version", "_name_or_path"):
        out.pop(key, None)
    out["rope_parameters"] = rope_parameters_of(out)
    out.pop("rope_theta", None), out.pop("rope_scaling", None)
    return out


def test_the_battery_is_large_and_covers_the_families():
    ported = [s for s, e in BATTERY.items() if not isinstance(e, Refused)]
    assert len(BATTERY) >= 30 and len(ported) >= 30
    assert {e[0] for s, e in BATTERY.items() if s in ported} == {
        "llama", "mistral", "mixtral", "qwen2", "gemma", "qwen3", "olmo2", "qwen3_moe", "deepseek_v2_lite", "deepseek_v3",
        "gemma2", "gemma3", "phi3"}
    assert sum(len(v) for v in TINY.values()) >= 12


@pytest.mark.parametrize("stem", sorted(BATTERY))
def test_porter_reads_each_published_config_as_transformers_does(tmp_path, stem):
    expected = BATTERY[stem]
    folder = model_folder(tmp_path, stem)
    result = CliRunner().invoke(app, ["spec", str(folder), "--as", "hf"])
    if isinstance(expected, Refused):
        assert result.exit_code == 2, result.output
        assert "porter does not port" in result.output
        for words in expected.says:
            assert words in result.output, words
        assert f"the closest family porter has is {expected.closest} (" in result.output
        return
    assert result.exit_code == 0, result.output
    theirs = transformers_reads(published(stem))
    # `porter spec --as hf`: the model porter ports, as a config.json, field for field; but for
    # the parts of the checkpoint the port leaves out as transformers does, which it says are
    # gone (DeepSeek-V3's multi-token prediction layer: num_nextn_predict_layers = 0)
    gone = {k: v for d in differences() for k, v in d.without_dropped(published(stem)).items()}
    ours = transformers_reads(json.loads(result.stdout))
    assert {k: v for k, v in ours.items() if k not in gone} == {k: v for k, v in theirs.items() if k not in gone}
    assert {k: ours[k] for k in gone} == gone
    # porter's own fields alone (no field of the file passed through) give every field the
    # modeling code reads: the numbers are porter's reading, not a copy
    spec = load_spec(str(folder))
    family, _ = expected
    assert f"(family: {family})" in spec.description
    own = transformers_reads(hf_config_of(spec))
    read = reading(published(stem))
    meaningful = {n for n in read.cls.reads if n in theirs and n not in OUTSIDE_FORWARD}
    assert meaningful >= {"hidden_size", "num_key_value_heads", "rope_parameters", "intermediate_size", "vocab_size"}
    assert {n: own[n] for n in meaningful} == {n: theirs[n] for n in meaningful}


@pytest.mark.parametrize("kv", [2, 8, 32])
def test_llama3_gets_no_scaling_and_llama31_llama3_scaling_whatever_the_kv_heads(tmp_path, kv):
    for stem, kind in (("meta-llama--Meta-Llama-3-8B", "none"), ("meta-llama--Llama-3.1-8B", "llama3")):
        config = {**published(stem), "num_key_value_heads": kv}
        spec = load_spec(str(model_folder(tmp_path / f"{kind}{kv}", stem, config)))
        assert spec["position_embedding.rope_scaling.type"] == kind
        assert spec["position_embedding.rope_theta"] == 500000.0
        assert "rope_type" not in (hf_file_of(spec).get("rope_scaling") or {}) or kind == "llama3"


def test_what_a_config_leaves_out_is_the_classs_default_not_the_familys(tmp_path):
    """Mistral's class has a 4096 window; a Mistral file without the field has one. Mixtral's
    class has base 1e6 (the family's spec too) while LLaMA's has 10000 whatever llama3.toml says."""
    mistral = {k: v for k, v in published("mistralai--Mistral-7B-v0.3").items() if k != "sliding_window"}
    assert load_spec(str(model_folder(tmp_path / "a", "mistralai--Mistral-7B-v0.3", mistral)))[
        "attention.sliding_window"] == 4096
    llama = {k: v for k, v in published("meta-llama--Llama-3.1-8B").items() if k not in ("rope_theta", "rope_scaling")}
    spec = load_spec(str(model_folder(tmp_path / "b", "meta-llama--Llama-3.1-8B", llama)))
    assert spec["position_embedding.rope_theta"] == 10000.0 and spec["position_embedding.rope_scaling.type"] == "none"


@pytest.mark.parametrize(("stem", "field"), [
    ("Qwen--Qwen2.5-0.5B", "use_mrope"),
    ("deepseek-ai--DeepSeek-R1-Distill-Qwen-1.5B", "use_mrope"),
    ("HuggingFaceTB--SmolLM2-135M", "is_llama_config"),
    ("HuggingFaceTB--SmolLM2-135M", "rope_interleaved"),
    ("huggyllama--llama-7b", "max_sequence_length"),
])
def test_fields_transformers_ignores_for_the_class_are_accepted(tmp_path, stem, field):
    from porter.hf_config import ignored_fields

    assert field in published(stem)
    assert field in ignored_fields(reading(published(stem)))
    load_spec(str(model_folder(tmp_path, stem)))


def test_a_field_the_modeling_code_reads_is_refused_by_name_unless_at_the_classs_default():
    config = reading({**published("meta-llama--Meta-Llama-3-8B"), "logit_scale": 0.5})
    pretend = replace(config.cls, reads=config.cls.reads | {"logit_scale"},
                      defaults={**config.cls.defaults, "logit_scale": 1.0})
    config.cls = pretend
    config["logit_scale"] = 0.5
    with pytest.raises(PorterError) as caught:
        check_fields(config, differences())
    assert "logit_scale" in caught.value.message and "logit_scale = 0.5" in caught.value.found
    config["logit_scale"] = config.raw["logit_scale"] = 1.0
    from porter.hf_config import _default_reading

    _default_reading.cache_clear()
    try:
        check_fields(config, differences())  # the class's own default: what porter's family port does already
    finally:
        _default_reading.cache_clear()


def test_quantized_weights_are_refused_by_name(tmp_path):
    config = {**published("meta-llama--Meta-Llama-3-8B"), "quantization_config": {"quant_method": "fp8"}}
    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, "meta-llama--Meta-Llama-3-8B", config)))
    assert caught.value.construct == "quantization_config"


def test_a_model_type_porter_has_no_word_for_names_the_family_sharing_most_fields(tmp_path):
    config = {**published("meta-llama--Meta-Llama-3-8B"), "model_type": "olmo", "architectures": ["OlmoForCausalLM"],
              "clip_qkv": None}
    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, "meta-llama--Meta-Llama-3-8B", config)))
    assert "no family for HF model_type 'olmo'" in caught.value.message
    assert "the closest family porter has is llama" in caught.value.fix


def test_no_bundled_family_is_in_the_table_of_families_porter_does_not_port():
    """A model type porter ports is read with its family, never refused as unported."""
    from porter.catalog import bundled_families
    from porter.hf_config import _unported_table, model_type_of

    ported = {model_type_of(spec.hf_class) for spec in bundled_families().values()}
    assert {"llama", "qwen3", "qwen3_moe", "olmo2", "deepseek_v2", "deepseek_v3"} <= ported
    assert not ported & set(_unported_table()), sorted(ported & set(_unported_table()))


def test_a_spec_name_alone_never_picks_the_family(tmp_path):
    """The gemma3 spec ports Gemma3ForCausalLM (model_type gemma3_text): a multimodal gemma3
    config.json (Gemma3ForConditionalGeneration) is read as its language model, the text_config,
    by that model_type's family, not by the outer file's model_type."""
    config = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": {"model_type": "gemma3_text", "hidden_size": 1152}}
    folder = tmp_path / "gemma-3-4b-it"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    spec = load_spec(str(folder))
    assert spec.hf_class == "Gemma3ForCausalLM" and spec["sizes.hidden_size"] == 1152
    assert "family: gemma3" in spec.description and "vision_config's encoder" in spec.description


def test_the_table_is_the_installed_transformers():
    """Without transformers porter reads through hf_classes.json: the same classes."""
    from porter.class_table import class_table as _table

    table = _table()
    for model_type, entry in table["classes"].items():
        import transformers

        from porter.hf_reading import causal_lm_of

        installed = {**table_entry(_installed(model_type)), "causal_lm": causal_lm_of(transformers, model_type)}
        assert {k: v for k, v in entry.items() if k != "legacy"} == installed, \
            f"{model_type}: run `python -m porter.hf_table` and review"


def test_without_transformers_porter_reads_every_config_the_same(tmp_path, monkeypatch):
    from porter import hf_config, hf_reading

    stems = [s for s, e in BATTERY.items() if not isinstance(e, Refused)]
    with_it = {s: dict(load_spec(str(model_folder(tmp_path / "a", s))).values) for s in stems}
    monkeypatch.setattr(hf_reading, "_installed", lambda model_type: None)
    hf_config._default_reading.cache_clear()
    try:
        for stem in stems:
            without = load_spec(str(model_folder(tmp_path / "b", stem)))
            assert reading(published(stem)).cls.origin.startswith("porter's table")
            assert dict(without.values) == with_it[stem], stem
    finally:
        hf_config._default_reading.cache_clear()


def test_the_battery_table_says_exact_or_refused_with_the_features(tmp_path):
    """python -m tests.families.battery_table (issue 17's closing note): its reading rows."""
    from tests.families.battery_table import reading_row

    assert reading_row(tmp_path, "meta-llama--Meta-Llama-3-8B") == {
        "config": "meta-llama--Meta-Llama-3-8B", "verdict": "exact", "family": "llama",
        "detail": BATTERY["meta-llama--Meta-Llama-3-8B"][1]}
    refused = reading_row(tmp_path, "EleutherAI--pythia-1b")
    assert refused["verdict"] == "refused" and "parallel residual" in refused["detail"], refused
    assert refused["detail"].endswith("closest: llama"), refused
    assert refused["family"] is None
