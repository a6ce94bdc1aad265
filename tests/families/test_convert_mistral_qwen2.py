"""`porter convert` for Mistral and Qwen2: HF -> Megatron (TP=2, PP=2) -> HF bit-exact, the
window carried in the checkpoint's args both ways (a null window too), Qwen2's q, k, v biases
and its tied head."""

import json

import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify

SIZES = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=250, max_position_embeddings=64, bos_token_id=5, eos_token_id=7)


def save_tiny(cls_name, folder, **fields):
    import transformers

    from porter.hf_config import installed_rope_spelling

    cls = getattr(transformers, cls_name)
    torch.manual_seed(0)
    model = cls(cls.config_class(**installed_rope_spelling({**SIZES, **fields}))).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


def round_trip(tree, tmp_path, family, hf):
    runner = CliRunner()
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", family,
                               "--target", str(tree), "--tp", "2", "--pp", "2"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", family, "--target", str(tree)])
    assert done.exit_code == 0, done.output
    (_, state), (config2, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    first = torch.load(ckpt / "release" / "mp_rank_00_model_states.pt", weights_only=False)
    return first, config2, state2, ckpt


def test_mistral_round_trips_bit_exact_with_its_window(mistral_qwen2_tree, tmp_path):
    hf = save_tiny("MistralForCausalLM", tmp_path / "hf", sliding_window=16, rope_theta=1e6, tie_word_embeddings=False)
    first, config, _, ckpt = round_trip(mistral_qwen2_tree, tmp_path, "mistral", hf)
    args = first["args"]
    assert (args.sliding_window, args.num_key_value_heads, args.rope_theta) == (16, 2, 1e6)
    assert config["sliding_window"] == 16 and config["architectures"] == ["MistralForCausalLM"]
    # the tree loads the checkpoint with its own --load and nothing else, and gives HF's logits
    result = verify(load_spec("mistral"), mistral_qwen2_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()
    print(f"mistral checkpoint TP=2 PP=2: max |dlogit| {result.results[0].max_logit_diff:.3g}")


def test_a_mistral_without_a_window_keeps_none_both_ways(mistral_qwen2_tree, tmp_path):
    """v0.2/v0.3: `sliding_window: null` into the mistral port (whose spec has 4096): the
    checkpoint's args say 0 (none), and the way back writes null, not 4096."""
    hf = save_tiny("MistralForCausalLM", tmp_path / "hf", sliding_window=None, rope_theta=1e6, tie_word_embeddings=False)
    assert json.loads((hf / "config.json").read_text())["sliding_window"] is None
    first, config, _, _ = round_trip(mistral_qwen2_tree, tmp_path, "mistral", hf)
    assert first["args"].sliding_window == 0
    assert config["sliding_window"] is None


def test_qwen2_round_trips_bit_exact_with_its_qkv_bias_and_tied_head(mistral_qwen2_tree, tmp_path):
    hf = save_tiny("Qwen2ForCausalLM", tmp_path / "hf", rope_theta=1e6, tie_word_embeddings=True)
    _, original = convert.read_hf(hf)
    assert "lm_head.weight" not in original and "model.layers.0.self_attn.q_proj.bias" in original
    first, config, state, ckpt = round_trip(mistral_qwen2_tree, tmp_path, "qwen2", hf)
    assert config["tie_word_embeddings"] is True and "attention_bias" not in config
    assert {k for k in state if k.endswith(".bias")} == {f"model.layers.{i}.self_attn.{x}_proj.bias"
                                                         for i in range(2) for x in "qkv"}
    assert "lm_head.weight" not in state
    args = first["args"]
    assert (args.add_qkv_bias, args.no_bias, args.num_key_value_heads) == (True, True, 2)
    port = convert.Port("qwen2", mistral_qwen2_tree)
    weights = port.read_checkpoint(ckpt)
    assert weights.output is None  # tied: the head is the embedding, on every stage that needs it
    for layer in weights.layers:
        assert {k for k in layer if k.endswith(".bias")} == {"attention.query_key_value.bias"}
