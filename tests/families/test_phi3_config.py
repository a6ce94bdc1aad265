"""Phi-3-mini-4k-instruct's and Phi-3.5-mini-instruct's published config.json as MODEL: each is its
bundled spec (phi3, phi3_5), read as transformers' Phi3Config reads it (the longrope lists, the
original context that chooses between them, the factor it leaves implicit), and written back to
a config that transformers reads to the same rotary frequencies; older spellings (`su`, Phi-3's
`yarn`) and the refusals (factor lists of the wrong length) by name."""

import copy
import json
from pathlib import Path

import pytest
import torch

from porter.catalog import load_spec
from porter.errors import PorterError
from porter.hf_config import hf_config_of, installed_rope_spelling

DATA = Path(__file__).parent / "data" / "hf_configs"
PHI3 = json.loads((DATA / "microsoft--Phi-3-mini-4k-instruct.json").read_text())
PHI3_5 = json.loads((DATA / "microsoft--Phi-3.5-mini-instruct.json").read_text())
SCALING = "position_embedding.rope_scaling."


def folder(tmp_path, config, name):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def phi3_config(fields):
    """transformers' reading of a config (on a copy: Phi3Config writes into the dicts it is given)."""
    from transformers import Phi3Config

    return Phi3Config(**{k: v for k, v in copy.deepcopy(fields).items() if k != "model_type"})


def frequencies(config, seq_len):
    """transformers' longrope frequencies and attention factor for a sequence of seq_len positions."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    return ROPE_INIT_FUNCTIONS["longrope"](config, None, seq_len=seq_len)


@pytest.mark.parametrize(("config", "bundled"), [(PHI3, "phi3"), (PHI3_5, "phi3_5")], ids=["phi3", "phi3_5"])
def test_the_published_config_is_the_bundled_spec(tmp_path, config, bundled):
    spec, family = load_spec(str(folder(tmp_path, config, bundled))), load_spec(bundled)
    assert spec.hf_class == "Phi3ForCausalLM" and "(family: phi3)" in spec.description  # Phi-3.5's model_type is phi3
    differ = {k: (spec[k], family[k]) for k in spec.values if spec[k] != family[k]}
    assert differ == {"sizes.vocab_size": (32064, None)}  # the vocabulary is the tokenizer's


def test_phi3_5_is_read_as_phi3config_reads_it_and_written_back_the_same(tmp_path):
    spec = load_spec(str(folder(tmp_path, PHI3_5, "phi35")))
    assert spec[SCALING + "type"] == "longrope" and spec[SCALING + "original_max_position_embeddings"] == 4096
    assert spec[SCALING + "factor"] == 131072 / 4096 and spec[SCALING + "attention_factor"] is None
    assert spec[SCALING + "short_factor"] == PHI3_5["rope_scaling"]["short_factor"]
    assert spec[SCALING + "long_factor"] == PHI3_5["rope_scaling"]["long_factor"]
    assert spec["attention.sliding_window"] == 262144
    theirs = phi3_config(PHI3_5)
    ours = phi3_config(installed_rope_spelling(hf_config_of(spec)))
    for seq_len in (None, 4096, 4097):  # no length, the original one (short), one past it (long)
        (a, fa), (b, fb) = frequencies(theirs, seq_len), frequencies(ours, seq_len)
        assert torch.equal(a, b) and fa == fb
    assert frequencies(theirs, 4097)[1] == frequencies(theirs, 4096)[1] > 1.19  # the attention factor at both
    for name in ("sliding_window", "max_position_embeddings", "original_max_position_embeddings", "rms_norm_eps",
                 "num_key_value_heads", "intermediate_size", "vocab_size", "tie_word_embeddings", "hidden_act"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_a_tiny_original_context_is_written_where_phi3config_reads_it():
    """Phi3Config's own original_max_position_embeddings (4096 by default) overrides the scaling's:
    porter writes both, so a tiny verify model's context of 16 is the one transformers uses."""
    spec = load_spec("phi3_5").with_values(**{SCALING + "original_max_position_embeddings": 16})
    config = phi3_config(installed_rope_spelling(hf_config_of(spec)))
    assert config.original_max_position_embeddings == 16 == config.rope_parameters["original_max_position_embeddings"]


def test_older_spellings_are_longrope_and_the_top_level_context_wins(tmp_path):
    """`su` (older files) and, in Phi-3's config class, `yarn` are longrope; transformers takes the
    original context from the top level (or Phi3Config's default) over the scaling's own."""
    for kind in ("su", "yarn"):
        config = {**PHI3_5, "rope_scaling": {**PHI3_5["rope_scaling"], "type": kind,
                                             "original_max_position_embeddings": 2048}}
        spec = load_spec(str(folder(tmp_path, config, kind)))
        hf = phi3_config(config)
        assert spec[SCALING + "type"] == "longrope" == hf.rope_parameters["rope_type"]
        assert spec[SCALING + "original_max_position_embeddings"] == 4096 == hf.rope_parameters["original_max_position_embeddings"]
    no_top = {k: v for k, v in PHI3_5.items() if k != "original_max_position_embeddings"}
    no_top["rope_scaling"] = {**PHI3_5["rope_scaling"], "original_max_position_embeddings": 2048}
    spec = load_spec(str(folder(tmp_path, no_top, "no_top")))
    assert spec[SCALING + "original_max_position_embeddings"] == phi3_config(no_top).rope_parameters[
        "original_max_position_embeddings"] == 4096  # Phi3Config's class default wins there too


def test_a_stated_factor_and_attention_factor_are_kept(tmp_path):
    config = {**PHI3_5, "rope_scaling": {**PHI3_5["rope_scaling"], "factor": 8.0, "attention_factor": 1.5}}
    spec = load_spec(str(folder(tmp_path, config, "stated")))
    assert (spec[SCALING + "factor"], spec[SCALING + "attention_factor"]) == (8.0, 1.5)
    ours = phi3_config(installed_rope_spelling(hf_config_of(spec)))
    assert frequencies(ours, 10)[1] == 1.5 == frequencies(phi3_config(config), 10)[1]


@pytest.mark.parametrize(("change", "named"), [
    ({"rope_scaling": {**PHI3_5["rope_scaling"], "short_factor": [1.0] * 47}}, "short_factor"),
    ({"rope_scaling": {"long_factor": [1.0] * 48, "type": "longrope"}}, "short_factor"),
    ({"rope_scaling": {**PHI3_5["rope_scaling"], "type": "dynamic"}}, "dynamic"),
], ids=["short-list-too-short", "no-short-list", "dynamic"])
def test_what_porter_cannot_port_is_refused_by_name(tmp_path, change, named):
    with pytest.raises(PorterError) as info:
        load_spec(str(folder(tmp_path, {**PHI3_5, **change}, "bad")))
    text = f"{info.value.message} {info.value.construct} {info.value.found}"
    assert named in text and info.value.file.endswith("config.json")


def test_a_partial_rotary_factor_of_one_is_whole_heads(tmp_path):
    config = {**PHI3, "partial_rotary_factor": 1.0}
    assert load_spec(str(folder(tmp_path, config, "whole")))["position_embedding.type"] == "rotary"
