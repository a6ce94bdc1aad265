"""Gemma-3 4B, 12B and 27B as published: Gemma3ForConditionalGeneration, the language model under
text_config beside a vision tower. porter ports the language model (porter/multimodal.py): its
config is the text_config as transformers reads the outer file, its tensors are read under the
published naming (language_model.model.*) and transformers 5's module names (model.language_model.*),
the vision tower and projector are left out, and the way back writes Gemma3ForCausalLM.

The default command reads (a published config field for field, a tiny checkpoint's tensors under
both namings, the refusals); apply, verify --hf and convert both ways on a tiny checkpoint that
transformers itself builds and saves are under -m slow.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.convert import HFDir
from porter.errors import PorterError
from porter.hf_reading import read_config

# gemma-3-4b-pt's config.json: the published file's fields (its text_config sets few of its own;
# the rest are Gemma3TextConfig's defaults, as transformers fills them in reading the outer file)
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}
# Mistral-Small-3.1's shape: Mistral3ForConditionalGeneration, a Mistral language model under text_config
MISTRAL3 = {
    "architectures": ["Mistral3ForConditionalGeneration"], "image_token_index": 10, "model_type": "mistral3",
    "multimodal_projector_bias": False, "projector_hidden_act": "gelu", "spatial_merge_size": 2,
    "text_config": {"head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 32768,
                    "max_position_embeddings": 131072, "model_type": "mistral", "num_attention_heads": 32,
                    "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
                    "rope_theta": 1000000000.0, "sliding_window": None, "vocab_size": 131072},
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "vision_config": {"head_dim": 64, "hidden_act": "silu", "hidden_size": 1024, "image_size": 1540,
                      "intermediate_size": 4096, "model_type": "pixtral", "num_attention_heads": 16,
                      "num_hidden_layers": 24, "patch_size": 14, "rope_theta": 10000.0},
    "vision_feature_layer": -1,
}
# Two files as published with every field written out (found verbatim in public repositories' text):
# gemma-3-12b's as unsloth's re-save writes it (transformers 4.51.3; no `architectures` in the copy
# found, so it is added), and a Mistral-Small-3 24B one as transformers 4.57.1 writes it ("dtype", no
# outer tie_word_embeddings: the class's default, tied).
GEMMA3_12B_RESAVED = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "bos_token_id": 2,
    "eoi_token_index": 256000, "eos_token_id": 106, "image_token_index": 262144, "initializer_range": 0.02,
    "mm_tokens_per_image": 256, "model_type": "gemma3", "pad_token_id": 0,
    "text_config": {"attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
                    "cache_implementation": "hybrid", "final_logit_softcapping": None, "head_dim": 256,
                    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3840, "initializer_range": 0.02,
                    "intermediate_size": 15360, "max_position_embeddings": 131072, "model_type": "gemma3_text",
                    "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8,
                    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000,
                    "sliding_window": 1024, "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "use_cache": True,
                    "vocab_size": 262208},
    "torch_dtype": "bfloat16", "transformers_version": "4.51.3", "unsloth_fixed": True,
    "vision_config": {"attention_dropout": 0.0, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152,
                      "image_size": 896, "intermediate_size": 4304, "layer_norm_eps": 1e-06,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_channels": 3,
                      "num_hidden_layers": 27, "patch_size": 14, "torch_dtype": "bfloat16", "vision_use_head": False},
}
MISTRAL3_4_57 = {
    "architectures": ["Mistral3ForConditionalGeneration"], "dtype": "bfloat16", "image_token_index": 10,
    "model_type": "mistral3", "multimodal_projector_bias": False, "projector_hidden_act": "gelu",
    "spatial_merge_size": 2,
    "text_config": {"attention_dropout": 0.0, "dtype": "bfloat16", "head_dim": 128, "hidden_act": "silu",
                    "hidden_size": 5120, "initializer_range": 0.02, "intermediate_size": 32768,
                    "max_position_embeddings": 131072, "model_type": "mistral", "num_attention_heads": 32,
                    "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
                    "rope_theta": 1000000000.0, "sliding_window": None, "use_cache": True, "vocab_size": 131072},
    "transformers_version": "4.57.1",
    "vision_config": {"attention_dropout": 0.0, "dtype": "bfloat16", "head_dim": 64, "hidden_act": "silu",
                      "hidden_size": 1024, "image_size": 1540, "initializer_range": 0.02, "intermediate_size": 4096,
                      "model_type": "pixtral", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 24,
                      "patch_size": 14, "rope_theta": 10000.0},
    "vision_feature_layer": -1,
}
# transformers 5's module names of the published ones
MODULE_NAMES = (("language_model.lm_head.", "lm_head."), ("language_model.model.", "model.language_model."),
                ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."))


def folder_of(tmp_path, config, name):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def transformers_text_config(raw):
    """The language model's config as transformers reads the outer file."""
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[raw["model_type"]].from_dict(json.loads(json.dumps(raw))).text_config.to_dict()


@pytest.mark.parametrize("raw, family, hf_class", [(GEMMA3_4B, "gemma3", "Gemma3ForCausalLM"),
                                                   (GEMMA3_12B_RESAVED, "gemma3", "Gemma3ForCausalLM"),
                                                   (MISTRAL3, "mistral", "MistralForCausalLM"),
                                                   (MISTRAL3_4_57, "mistral", "MistralForCausalLM")])
def test_a_published_multimodal_config_is_read_as_its_language_model_field_for_field(tmp_path, raw, family, hf_class):
    folder = folder_of(tmp_path, raw, "model")
    read = read_config(folder)
    theirs = transformers_text_config(raw)
    assert read.model_type == theirs["model_type"] and read.multimodal.architecture == raw["architectures"][0]
    # the model's fields (the base class's bookkeeping apart: architectures, dtype, token ids...)
    compared = [k for k in theirs if k in read and k not in ("rope_parameters", "tie_word_embeddings")
                and not k.startswith("_") and k not in read.cls.base]
    assert len(compared) >= 15, compared
    assert {k: read[k] for k in compared} == {k: theirs[k] for k in compared}
    # the head is tied as the whole model ties it: by the outer file's field (or its class's default)
    from transformers import CONFIG_MAPPING

    assert read["tie_word_embeddings"] == CONFIG_MAPPING[raw["model_type"]].from_dict(dict(raw)).tie_word_embeddings
    assert read["rope_parameters"] == theirs["rope_parameters"] or read.rope_parameters() == theirs["rope_parameters"]
    spec = load_spec(str(folder))
    assert spec.hf_class == hf_class and f"(family: {family})" in spec.description
    assert "vision_config's encoder, the projector) left out" in spec.description
    assert spec["sizes.hidden_size"] == theirs["hidden_size"] and spec["sizes.num_layers"] == theirs["num_hidden_layers"]
    shown = CliRunner().invoke(app, ["spec", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert "left out: porter ports the language model" in shown.output


def test_gemma_3_4b_reads_its_global_layers_linear_scaling_and_the_local_base_unscaled(tmp_path):
    spec = load_spec(str(folder_of(tmp_path, GEMMA3_4B, "gemma-3-4b-pt")))
    assert (spec["position_embedding.rope_scaling.type"], spec["position_embedding.rope_scaling.factor"]) == ("linear", 8.0)
    assert (spec["position_embedding.rope_theta"], spec["position_embedding.local_rope_theta"]) == (1e6, 1e4)
    assert (spec["attention.sliding_window"], spec["attention.head_dim"], spec["sizes.vocab_size"]) == (1024, 256, 262208)


def test_the_language_models_head_is_tied_as_the_whole_model_ties_it(tmp_path):
    """transformers ties a model's head by its own config's field: Mistral3ForConditionalGeneration
    by the outer tie_word_embeddings (its class's default: tied), whatever the text_config says."""
    from transformers import Mistral3Config

    raw = {k: v for k, v in MISTRAL3.items() if k != "tie_word_embeddings"}
    read = read_config(folder_of(tmp_path, raw, "model"))
    assert read["tie_word_embeddings"] is Mistral3Config().tie_word_embeddings is True
    assert transformers_text_config(raw)["tie_word_embeddings"] is False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Gemma3ForConditionalGeneration built and saved by transformers (weights std 0.1, norms in
    [0.5, 1.5]; layer 0 local under an 8-token window, layer 1 global), and the same checkpoint
    under transformers 5's module names."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from porter.verify.reference import randomize

    config = Gemma3Config(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300, "sliding_window": 8,
                     "max_position_embeddings": 128, "layer_types": ["sliding_attention", "full_attention"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4, image_token_index=299, boi_token_index=297, eoi_token_index=298)
    model = Gemma3ForConditionalGeneration(config)
    randomize(model, 0.1, 7)
    root = tmp_path_factory.mktemp("gemma3mm")
    published, modules = root / "published", root / "modules"
    model.save_pretrained(str(published))
    tensors = load_file(str(published / "model.safetensors"))
    # the published naming (what transformers 5's save_pretrained writes too)
    assert all(name.startswith(("language_model.model.", "vision_tower.", "multi_modal_projector."))
               for name in tensors), sorted(tensors)
    shutil.copytree(published, modules)
    renamed = {}
    for name, tensor in tensors.items():
        old, new = next((o, n) for o, n in MODULE_NAMES if name.startswith(o))
        renamed[new + name[len(old):]] = tensor
    save_file(renamed, str(modules / "model.safetensors"), metadata={"format": "pt"})
    text = {name: t for name, t in model.state_dict().items() if "language_model" in name or name == "lm_head.weight"}
    return {"published": published, "modules": modules, "text": text}


@pytest.mark.parametrize("naming", ["published", "modules"])
def test_the_language_models_tensors_read_under_both_namings_the_rest_left_out(tiny, naming):
    source = HFDir(tiny[naming])
    assert source.multimodal.architecture == "Gemma3ForConditionalGeneration"
    assert source.config["model_type"] == "gemma3_text" and source.config["architectures"] == ["Gemma3ForCausalLM"]
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    with torch.device("meta"):
        text_class = Gemma3ForCausalLM(Gemma3TextConfig.from_dict(source.config))
    assert set(source.names) == set(text_class.state_dict()) - {"lm_head.weight"}  # tied, as saved
    parts = {"published": ("multi_modal_projector", "vision_tower"),
             "modules": ("model.multi_modal_projector", "model.vision_tower")}[naming]
    assert tuple(source.left_out) == parts and all(source.left_out.values())
    for name in source.names:  # the language model's own tensors, bit for bit
        assert torch.equal(source.tensor(name), tiny["text"][name.replace("model.", "model.language_model.", 1)])
    assert source.bytes_read == sum(t.numel() * t.element_size() for n, t in tiny["text"].items() if n != "lm_head.weight")


def test_a_checkpoint_without_the_language_models_tensors_is_refused(tiny, tmp_path):
    broken = tmp_path / "vision-only"
    shutil.copytree(tiny["published"], broken)
    tensors = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("language_model.")},
              str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(PorterError) as caught:
        HFDir(broken)
    error = caught.value
    assert "no tensor of Gemma3ForConditionalGeneration's language model" in error.message
    assert error.file.endswith("config.json") and "language_model.model.*" in error.construct
    assert "vision_tower.*" in error.found and error.fix


@pytest.mark.parametrize("text_type, entry", [("gpt_neox", "GPT-NeoX"), ("mamba", None)])
def test_a_text_config_of_a_model_type_porter_does_not_port_is_refused(tmp_path, text_type, entry):
    raw = {**MISTRAL3, "text_config": {"model_type": text_type, "hidden_size": 64}}
    folder = folder_of(tmp_path, raw, "model")
    result = CliRunner().invoke(app, ["spec", str(folder)])
    assert result.exit_code == 2, result.output
    assert "the language model (text_config) of this Mistral3ForConditionalGeneration" in result.output
    assert f"model_type {text_type!r}" in result.output or f"model_type '{text_type}'" in result.output
    assert "file:" in result.output and str(folder / "config.json") in result.output
    assert "looked for: a language model (text_config) of model_type porter ports" in result.output
    assert "fix:" in result.output
    if entry:
        assert entry in result.output


@pytest.mark.parametrize("text_config, named", [("x", "text_config"), ({"hidden_size": "big"}, "hidden_size"),
                                                 ({"num_attention_heads": 0}, "modulo by zero")],
                         ids=["not-a-dict", "field-of-the-wrong-type", "no-heads"])
def test_a_text_config_transformers_refuses_exits_2_naming_the_field(tmp_path, text_config, named):
    """transformers' own checks of the outer file (huggingface_hub's validation errors among them)
    said as porter's refusal, as for a text model's file."""
    folder = folder_of(tmp_path, {**GEMMA3_4B, "text_config": text_config}, "model")
    result = CliRunner().invoke(app, ["spec", str(folder)])
    assert result.exit_code == 2, result.output
    assert "transformers' Gemma3Config refuses this config.json" in result.output and named in result.output
    assert str(folder / "config.json") in result.output


def test_the_text_model_type_is_the_one_transformers_reads(tmp_path):
    """Gemma3Config reads its text_config as Gemma3TextConfig whatever model_type the file writes
    under it: porter names the model it reads (gemma3_text), not the file's word."""
    text_config = {**GEMMA3_4B["text_config"], "model_type": "llama"}
    read = read_config(folder_of(tmp_path, {**GEMMA3_4B, "text_config": text_config}, "model"))
    assert read.model_type == read.multimodal.text_model_type == "gemma3_text"


def test_verify_hf_reads_the_users_config_as_porter_reads_it(tmp_path):
    """verify --hf's config.json: a file that is not a JSON object refused by name (not a crash),
    a multimodal one read as its language model's."""
    from porter.verify.parity import users_config

    folder = folder_of(tmp_path, [], "list")
    with pytest.raises(PorterError, match="not a JSON object") as caught:
        users_config(folder)
    assert caught.value.file == str(folder / "config.json")
    raw, found = users_config(folder_of(tmp_path, GEMMA3_4B, "model"))
    assert raw["model_type"] == "gemma3_text" and raw["architectures"] == ["Gemma3ForCausalLM"]
    assert found.architecture == "Gemma3ForConditionalGeneration"


def test_verify_hf_of_a_multimodal_class_transformers_lacks_is_refused_by_name(tmp_path):
    """verify --hf loads the whole model as transformers does: a *ForConditionalGeneration it does
    not have (remote code) is refused naming the class, before anything is read."""
    import dataclasses

    from porter.multimodal import of
    from porter.verify.parity import _language_model

    folder = folder_of(tmp_path, GEMMA3_4B, "model")
    found = dataclasses.replace(of(GEMMA3_4B), architecture="RemoteCodeForConditionalGeneration")
    with pytest.raises(PorterError, match="RemoteCodeForConditionalGeneration") as caught:
        _language_model(folder, found, None, torch.float32, torch.zeros(1, 4, dtype=torch.long))  # no class used
    assert caught.value.file == str(folder / "config.json") and caught.value.fix


# -- through the tree (slow) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tiny, tmp_path_factory):
    from tests.conftest import copy_sample_tree

    tree = copy_sample_tree(tmp_path_factory.mktemp("gemma3mm-tree") / "Megatron-DeepSpeed")
    result = CliRunner().invoke(app, ["apply", str(tiny["published"]), "--target", str(tree)])
    assert result.exit_code == 0, result.output
    return tree


@pytest.mark.slow
@pytest.mark.parametrize("naming", ["published", "modules"])
def test_verify_with_the_users_weights_passes_both_classes(tiny, tree, naming, tmp_path):
    result = CliRunner().invoke(app, ["verify", str(tiny["published"]), "--target", str(tree),
                                      "--hf", str(tiny[naming]), "--workdir", str(tmp_path / "verify")])
    assert result.exit_code == 0, result.output
    assert "Gemma3ForConditionalGeneration.from_pretrained" in result.output
    assert "run as Gemma3ForCausalLM (the whole model's logits on the batch's text tokens: max |difference| 0" \
        in result.output
    assert result.output.count("passed: max |logit - HF| =") == 2, result.output


@pytest.mark.slow
def test_verify_without_the_users_weights_builds_the_text_class_from_the_text_config(tiny, tree, tmp_path):
    result = CliRunner().invoke(app, ["verify", str(tiny["published"]), "--target", str(tree),
                                      "--workdir", str(tmp_path / "verify")])
    assert result.exit_code == 0, result.output
    assert result.output.count("passed: max |logit - HF| =") == 2, result.output


@pytest.mark.slow
@pytest.mark.parametrize("naming", ["published", "modules"])
def test_convert_both_ways_is_bit_exact_for_the_language_model(tiny, tree, naming, tmp_path):
    runner = CliRunner()
    model = str(tiny["published"])
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(tiny[naming]), "--out", str(ckpt),
                               "--target", str(tree), "--model", model, "--tp", "2"])
    assert done.exit_code == 0, done.output
    assert "converted the language model (text_config, model_type gemma3_text)" in done.output
    assert "vision_tower.* (" in done.output and "multi_modal_projector.* (" in done.output
    assert "megatron-to-hf writes the language model alone: Gemma3ForCausalLM (model_type gemma3_text)" in done.output
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--target", str(tree), "--model", model])
    assert done.exit_code == 0, done.output
    assert "(Gemma3ForCausalLM (model_type gemma3_text))" in done.output
    config = json.loads((back / "config.json").read_text())
    assert (config["architectures"], config["model_type"]) == (["Gemma3ForCausalLM"], "gemma3_text")
    written = load_file(str(back / "model.safetensors"))
    source = HFDir(tiny[naming])
    assert set(written) == set(source.names)
    for name in written:
        assert torch.equal(written[name], source.tensor(name)), name
    from transformers import Gemma3ForCausalLM

    Gemma3ForCausalLM.from_pretrained(str(back))  # a text-only checkpoint transformers loads


@pytest.mark.slow
def test_converting_a_checkpoint_without_the_language_model_exits_2(tiny, tree, tmp_path):
    broken = tmp_path / "vision-only"
    shutil.copytree(tiny["published"], broken)
    tensors = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("language_model.")},
              str(broken / "model.safetensors"), metadata={"format": "pt"})
    done = CliRunner().invoke(app, ["convert", "hf-to-megatron", "--hf", str(broken), "--out", str(tmp_path / "ckpt"),
                                    "--target", str(tree), "--model", str(tiny["published"])])
    assert done.exit_code == 2, done.output
    assert "no tensor of Gemma3ForConditionalGeneration's language model" in done.output
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_mistral3s_language_model_with_its_own_head_is_ported_the_same_way(tmp_path):
    """Mistral3ForConditionalGeneration (Mistral-Small-3.1's shape, head untied): its language
    model is the mistral family's, verified with its weights and converted both ways bit-exact."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from porter.verify.reference import randomize
    from tests.conftest import copy_sample_tree

    config = Mistral3Config(
        text_config={"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300,
                     "max_position_embeddings": 128, "sliding_window": None, "rope_theta": 1e9},
        vision_config={"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "head_dim": 16},
        image_token_index=10, tie_word_embeddings=False)
    model = Mistral3ForConditionalGeneration(config)
    randomize(model, 0.1, 3)
    folder = tmp_path / "mistral3"
    model.save_pretrained(str(folder))
    tree = copy_sample_tree(tmp_path / "Megatron-DeepSpeed")
    runner = CliRunner()
    done = runner.invoke(app, ["apply", str(folder), "--target", str(tree)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["verify", str(folder), "--target", str(tree), "--hf", str(folder)])
    assert done.exit_code == 0, done.output
    assert "run as MistralForCausalLM" in done.output and done.output.count("passed: max |logit - HF| =") == 2
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(folder), "--out", str(ckpt),
                               "--target", str(tree), "--model", str(folder), "--tp", "2"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--target", str(tree), "--model", str(folder)])
    assert done.exit_code == 0, done.output
    written, source = load_file(str(back / "model.safetensors")), HFDir(folder)
    assert "lm_head.weight" in written and set(written) == set(source.names)
    assert all(torch.equal(written[name], source.tensor(name)) for name in written)
    assert json.loads((back / "config.json").read_text())["architectures"] == ["MistralForCausalLM"]
