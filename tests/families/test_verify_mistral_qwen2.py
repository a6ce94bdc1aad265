"""`porter verify` for Mistral and Qwen2 on one tree holding both ports, each against its own HF
class (MistralForCausalLM with an 8-position window on 32 tokens, Qwen2ForCausalLM with its q, k, v
biases and tied embeddings) at TP=1, TP=2 and PP=2; and ports broken on purpose (the window off,
in the fused and in the unfused attention; a bias on every projection) fail and name the module
that differs."""

import json
import shutil

import pytest
from safetensors import safe_open

from porter.catalog import load_spec
from porter.verify.parity import VerifyOptions, verify
from tests.helpers.trees import edited_copy

MISTRAL, QWEN2 = load_spec("mistral"), load_spec("qwen2")
LAYER0 = "language_model.encoder.layers.0"
SIZES = [VerifyOptions(), VerifyOptions(tensor_parallel=2), VerifyOptions(pipeline_parallel=2, kinds=("pipe",))]
IDS = ["tp1", "tp2", "pp2"]
WINDOW_LINE = "        attention_mask = sliding_window_mask(attention_mask, self.sliding_window, key_layer)\n"
FUSED_TEST = "    return query.dtype == torch.float32 or bool(softmax.softmax_in_fp32)\n"


def passed(result, prefix, options):
    classes = [f"{prefix}Model", f"{prefix}ModelPipe"] if options.pipeline_parallel is None else [f"{prefix}ModelPipe"]
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
        assert not [p for p in r.probes if p.diverges]
        print(f"{r.model_class} TP={r.tensor_parallel} PP={r.pipeline_parallel}: max |dlogit| {r.max_logit_diff:.3g}")
    return result


def first_divergence(result):
    assert not result.passed
    (r,) = result.results
    assert r.max_logit_diff > 1e-2
    return r.first_divergence


@pytest.mark.parametrize("options", SIZES, ids=IDS)
def test_mistral_with_its_sliding_window_matches_hf(mistral_qwen2_tree, tmp_path, options):
    passed(verify(MISTRAL, mistral_qwen2_tree, tmp_path, options), "Mistral", options)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    assert config["sliding_window"] == 8 and config["max_position_embeddings"] == 32  # a window shorter than the batch
    assert (config["num_key_value_heads"], config["num_attention_heads"]) == (2, 4)


@pytest.mark.parametrize("options", SIZES, ids=IDS)
def test_qwen2_with_its_qkv_bias_and_tied_head_matches_hf(mistral_qwen2_tree, tmp_path, options):
    passed(verify(QWEN2, mistral_qwen2_tree, tmp_path, options), "Qwen2", options)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["tie_word_embeddings"] is True
    assert "attention_bias" not in config and config["rope_parameters"]["rope_theta"] == 1e6
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
    assert {f"model.layers.0.self_attn.{x}_proj.bias" for x in "qkv"} <= names
    assert not {n for n in names if n.endswith(("o_proj.bias", "down_proj.bias", "up_proj.bias"))}
    assert "lm_head.weight" not in names  # tied: HF's own checkpoints leave the head out


def test_mistral_without_its_window_fails_at_the_attention(mistral_qwen2_tree, tmp_path):
    tree = edited_copy(mistral_qwen2_tree, tmp_path / "tree", ("megatron/model/transformer.py", WINDOW_LINE, ""))
    first = first_divergence(verify(MISTRAL, tree, tmp_path / "verify", VerifyOptions(kinds=("model",))))
    assert first.name == f"{LAYER0}.attention", first  # the attention context, before any projection after it
    assert first.what.startswith("attention context")


def test_the_unfused_attention_keeps_the_window_too(mistral_qwen2_tree, tmp_path):
    """The tree's own softmax with the mask (the fused kernel turned off in a copy): verified; and
    the same copy without the window fails at the attention."""
    unfused = ("megatron/model/fused_attention.py", FUSED_TEST, "    return False\n")
    tree = edited_copy(mistral_qwen2_tree, tmp_path / "unfused", unfused)
    result = verify(MISTRAL, tree, tmp_path / "ok", VerifyOptions(kinds=("model",)))
    assert result.passed, result.as_dict()
    print(f"unfused MistralModel: max |dlogit| {result.results[0].max_logit_diff:.3g}")

    tree = edited_copy(mistral_qwen2_tree, tmp_path / "unfused-no-window",
                       unfused, ("megatron/model/transformer.py", WINDOW_LINE, ""))
    first = first_divergence(verify(MISTRAL, tree, tmp_path / "bad", VerifyOptions(kinds=("model",))))
    assert first.name == f"{LAYER0}.attention", first


def test_qwen2_with_a_bias_on_every_projection_fails_at_the_attention_output(mistral_qwen2_tree, tmp_path):
    """The per-site switches ignored: every linear keeps its bias (GPT's), not the QKV projection alone."""
    path = mistral_qwen2_tree / "megatron/model/transformer.py"
    sites = path.read_text().count("bias=not args.no_bias)")
    assert sites == 3  # the attention output and the MLP's two linears
    tree = tmp_path / "tree"
    shutil.copytree(mistral_qwen2_tree, tree, ignore=shutil.ignore_patterns("__pycache__"))
    target = tree / "megatron/model/transformer.py"
    target.write_text(target.read_text().replace("bias=not args.no_bias)", "bias=True)"))
    result = verify(QWEN2, tree, tmp_path / "verify", VerifyOptions(kinds=("model",)))
    first = first_divergence(result)
    assert first.name == f"{LAYER0}.attention.dense", first
    unexpected = {p["tensor"] for p in result.results[0].structure}
    assert {f"{LAYER0}.attention.dense.bias", f"{LAYER0}.mlp.dense_h_to_4h.bias",
            f"{LAYER0}.mlp.dense_4h_to_h.bias"} <= unexpected
