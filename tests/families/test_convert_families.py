"""`porter convert` for the LLaMA family: GQA shards, and every number carried both ways.

The HF model's numbers are deliberately not the llama3 spec's (rotary base 1e6, epsilon 3e-5,
scaling factor 4 from an original context of 16, 2 key/value heads, its own token ids): the
checkpoint's args must hold them so a plain --load needs no flags, and the way back must
write them into config.json.
"""

import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify

NUMBERS = dict(rms_norm_eps=3e-5, num_key_value_heads=2, vocab_size=250, bos_token_id=5, eos_token_id=7,
               max_position_embeddings=64)
ROPE = {"rope_type": "llama3", "rope_theta": 1e6, "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}


def tiny_llama31(folder):
    from transformers import LlamaConfig, LlamaForCausalLM

    from porter.hf_config import installed_rope_spelling

    fields = installed_rope_spelling(dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                          num_attention_heads=4, tie_word_embeddings=False, rope_parameters=ROPE,
                                          **NUMBERS))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**fields)).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


def test_gqa_with_its_numbers_round_trips_bit_exact_and_loads_plainly(families_tree, tmp_path):
    hf = tiny_llama31(tmp_path / "hf")
    runner = CliRunner()
    ckpt = tmp_path / "ckpt"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", "llama3",
                               "--target", str(families_tree), "--tp", "2", "--pp", "2"])
    assert done.exit_code == 0, done.output
    args = torch.load(ckpt / "release" / "mp_rank_00_model_states.pt", weights_only=False)["args"]
    assert (args.rope_theta, args.layernorm_epsilon, args.num_key_value_heads) == (1e6, 3e-5, 2)
    assert (args.rope_scaling_type, args.rope_scaling_factor, args.rope_scaling_original_max_positions) == \
        ("llama3", 4.0, 16)
    assert args.ffn_hidden_size == 192 and args.padded_vocab_size == 256

    back = tmp_path / "back"
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "llama3", "--target", str(families_tree)])
    assert done.exit_code == 0, done.output
    (_, state), (config2, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    for key, value in NUMBERS.items():
        assert config2[key] == value, key
    params = config2.get("rope_parameters") or {**config2["rope_scaling"], "rope_theta": config2["rope_theta"]}
    assert {k: params[k] for k in ROPE} == ROPE

    # the tree loads the checkpoint with its own --load and nothing else, and runs HF's logits
    result = verify(load_spec("llama3"), families_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()
    assert result.results[0].tensor_parallel == 2 and result.results[0].pipeline_parallel == 2


def test_the_tensor_parallel_size_must_divide_the_key_value_heads(families_tree, tmp_path):
    hf = tiny_llama31(tmp_path / "hf")
    done = CliRunner().invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(tmp_path / "ckpt"),
                                    "--model", "llama3", "--target", str(families_tree), "--tp", "4"])
    assert done.exit_code == 2
    assert "key/value heads 2, --tp 4" in done.output
