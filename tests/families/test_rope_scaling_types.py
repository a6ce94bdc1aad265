"""Rope scaling types of published checkpoints (llama3, linear, yarn): porter's rotary embedding
(templates/rotary_embedding.py.j2, as a port writes it) gives exactly transformers' frequencies and
attention factor, and the config's fields become the spec's and back."""

import types

import pytest
import torch

from porter.catalog import load_spec
from porter.errors import PorterError
from porter.hf_config import hf_config_of
from porter.render import environment
from tests.families.battery import model_folder, published


@pytest.fixture(scope="module")
def rotary():
    """The rotary module a port writes (megatron/model/rotary_embedding.py), as a module."""
    module = types.ModuleType("rotary_embedding")
    exec(compile(environment().get_template("rotary_embedding.py.j2").render(), "rotary_embedding.py", "exec"),
         module.__dict__)
    return module


def transformers_rope(params: dict, head_dim: int = 64, max_positions: int = 32768):
    """(inv_freq, attention_factor) from transformers' own rope function for the parameters."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.utils import logging

    logging.set_verbosity_error()
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, max_position_embeddings=max_positions,
                         rope_parameters=dict(params))
    return ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")


CASES = {
    "linear (longchat)": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 8.0},
    "yarn (Qwen2.5 long context)": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                                    "original_max_position_embeddings": 32768},
    "yarn with mscale and mscale_all_dim": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                           "original_max_position_embeddings": 4096, "mscale": 1.0,
                                           "mscale_all_dim": 0.707, "beta_fast": 32.0, "beta_slow": 1.0},
    "yarn with its attention factor given, untruncated": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0,
                                                          "original_max_position_embeddings": 8192,
                                                          "attention_factor": 1.5, "truncate": False,
                                                          "beta_fast": 16.0, "beta_slow": 2.0},
    "llama3 (LLaMA-3.1)": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("head_dim", [16, 64, 128])
def test_porters_rotary_embedding_is_transformers_rope_function(rotary, params, head_dim):
    expected, attention = transformers_rope(params, head_dim)
    scaling = {"type": params["rope_type"], **{k: v for k, v in params.items() if k not in ("rope_type", "rope_theta")}}
    if "truncate" in scaling:
        scaling["truncate"] = int(scaling["truncate"])
    mine = rotary.RotaryEmbedding(head_dim, theta=params["rope_theta"], scaling=scaling)
    assert torch.equal(mine.inv_freq, expected.float())
    assert mine.attention_scaling == attention
    # and the tables: cos and sin times the attention factor, as HF's rotary embedding makes them
    q = torch.zeros(8, 1, 1, head_dim)
    cos, sin = mine._tables(8, q.device, torch.float32)
    angles = torch.outer(torch.arange(8, dtype=torch.float32), expected.float())
    assert torch.allclose(cos[:, 0, 0], torch.cat((angles, angles), -1).cos() * attention, atol=0, rtol=0)


@pytest.mark.parametrize(("stem", "kind", "numbers"), [
    ("lmsys--longchat-7b-v1.5-32k", "linear", {"factor": 8.0}),
    ("Qwen--Qwen2.5-7B-Instruct-YaRN", "yarn", {"factor": 4.0, "original_max_position_embeddings": 32768}),
])
def test_a_published_scaling_is_read_and_written_back(tmp_path, stem, kind, numbers):
    spec = load_spec(str(model_folder(tmp_path, stem)))
    assert spec["position_embedding.rope_scaling.type"] == kind
    for key, value in numbers.items():
        assert spec[f"position_embedding.rope_scaling.{key}"] == value
    params = hf_config_of(spec)["rope_parameters"]
    assert params == {"rope_type": kind, "rope_theta": spec["position_embedding.rope_theta"], **numbers}


def test_yarn_without_a_factor_takes_transformers_implicit_one(tmp_path):
    config = published("Qwen--Qwen2.5-7B-Instruct-YaRN")
    config["max_position_embeddings"] = 131072
    config["rope_scaling"] = {"type": "yarn", "factor": None, "original_max_position_embeddings": 32768}
    spec = load_spec(str(model_folder(tmp_path, "Qwen--Qwen2.5-7B-Instruct-YaRN", config)))
    assert spec["position_embedding.rope_scaling.factor"] == 4.0


@pytest.mark.parametrize(("kind", "scaling"), [
    ("dynamic", {"factor": 2.0}),  # longrope is ported (Phi-3.5: test_phi3_rope.py)
])
def test_a_rope_type_porter_lacks_is_refused_by_name(tmp_path, kind, scaling):
    config = {**published("meta-llama--Llama-3.1-8B"), "rope_scaling": {"rope_type": kind, **scaling}}
    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, "meta-llama--Llama-3.1-8B", config)))
    assert kind in caught.value.message and "rope_type" in caught.value.construct
