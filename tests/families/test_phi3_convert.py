"""`porter convert` for Phi-3.5 both ways at TP=2 and PP=2: HF's fused qkv_proj and gate_up_proj
cut into the tree's per-head q, k, v and its gate+up halves per rank, and made again, bit for
bit; the longrope numbers (lists, original context, factor) carried in the checkpoint's args and
back into config.json; and the tree loads the checkpoint with its own --load and gives HF's logits.
The Weight entries themselves: the fused tensors cut as Phi3Attention and Phi3MLP read them, under
grouped-query shapes too, on real and on meta tensors."""

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.convert.pieces import as_meta, joined
from porter.cli import app
from porter.layout import WeightLayout
from porter.verify.parity import VerifyOptions, verify
from porter.weights import LayerWeights, ModelShape, fuse_qkv

SHORT = [1.0, 1.05, 1.1, 1.34, 1.91, 2.02, 2.03, 2.09]
LONG = [1.08, 1.62, 7.7, 28.57, 42.32, 57.93, 62.71, 63.97]
ROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": SHORT, "long_factor": LONG, "factor": 32.0,
        "original_max_position_embeddings": 16}


def tiny_phi3_5(folder):
    from transformers import Phi3Config, Phi3ForCausalLM

    from porter.hf_config import installed_rope_spelling

    fields = installed_rope_spelling(dict(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        vocab_size=250, max_position_embeddings=64, original_max_position_embeddings=16, rms_norm_eps=1e-5,
        sliding_window=262144, tie_word_embeddings=False, rope_parameters=dict(ROPE), bos_token_id=1, eos_token_id=2,
        pad_token_id=3))
    torch.manual_seed(0)
    model = Phi3ForCausalLM(Phi3Config(**fields)).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_phi3_5_round_trips_bit_exact_at_tp2_pp2_and_loads_plainly(phi3_tree, tmp_path):
    hf = tiny_phi3_5(tmp_path / "hf")
    runner = CliRunner()
    ckpt = tmp_path / "ckpt"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", "phi3_5",
                               "--target", str(phi3_tree), "--tp", "2", "--pp", "2"])
    assert done.exit_code == 0, done.output
    args = torch.load(ckpt / "release" / "mp_rank_00_model_states.pt", weights_only=False)["args"]
    assert (args.rope_scaling_type, args.rope_scaling_factor, args.rope_scaling_original_max_positions) == \
        ("longrope", 32.0, 16)
    assert args.rope_scaling_short_factor == SHORT and args.rope_scaling_long_factor == LONG
    assert args.ffn_hidden_size == 160 and args.sliding_window == 262144

    back = tmp_path / "back"
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "phi3_5", "--target", str(phi3_tree)])
    assert done.exit_code == 0, done.output
    (_, state), (config2, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2)
    assert "model.layers.1.self_attn.qkv_proj.weight" in state2 and "model.layers.1.mlp.gate_up_proj.weight" in state2
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    params = config2.get("rope_parameters") or {**config2["rope_scaling"], "rope_theta": config2["rope_theta"]}
    assert {k: params[k] for k in ROPE if k != "original_max_position_embeddings"} == \
        {k: v for k, v in ROPE.items() if k != "original_max_position_embeddings"}
    assert config2["original_max_position_embeddings"] == 16

    # the tree loads the checkpoint with its own --load and nothing else, and runs HF's logits
    result = verify(load_spec("phi3_5"), phi3_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()
    assert result.results[0].tensor_parallel == 2 and result.results[0].pipeline_parallel == 2


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_the_fused_weights_are_cut_as_phi3_reads_them(kv_heads):
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3Attention, Phi3MLP

    config = Phi3Config(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=kv_heads,
                        num_hidden_layers=1, vocab_size=64, pad_token_id=0)
    torch.manual_seed(0)
    attention, mlp = Phi3Attention(config, 0), Phi3MLP(config)
    shape = ModelShape(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=96, vocab_size=64,
                       kv_heads=kv_heads)
    spec = load_spec("phi3")
    layer = LayerWeights(WeightLayout(hf_fused=("qkv", "gate_up")), shape, {})
    for difference in spec.wanted():
        difference.weights(layer)
    qkv, gate_up = layer.slots["qkv"][0], layer.slots["mlp_in"][0]
    assert qkv.hf == ("self_attn.qkv_proj.weight",) and gate_up.hf == ("mlp.gate_up_proj.weight",)
    fused = attention.qkv_proj.weight.detach()
    q, k, v = fused.split([4 * 16, kv_heads * 16, kv_heads * 16])  # Phi3Attention's own slicing
    tree = joined(qkv.to_tree([fused]))  # a join that only reorders rows gives pieces
    assert torch.equal(tree, joined(fuse_qkv(q, k, v, kv_heads)))  # the tree's per key/value head layout
    assert torch.equal(qkv.to_hf(tree)[0], fused)
    gu = mlp.gate_up_proj.weight.detach()
    gate, up = gu.chunk(2, dim=0)  # Phi3MLP: the first half is the gate
    assert torch.equal(joined(gate_up.to_tree([gu])), torch.cat((gate, up))) and torch.equal(gate_up.to_hf(gu)[0], gu)
    meta = as_meta(qkv.to_tree([fused.to("meta")]))
    assert meta.is_meta and meta.shape == fused.shape  # planned before a byte is read


def test_a_checkpoint_spelled_apart_is_read_as_it_is():
    """An HF checkpoint at hand with q_proj, k_proj, v_proj (not qkv_proj) is taken with those names."""
    shape = ModelShape(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=96, vocab_size=64)
    names = {f"model.layers.0.self_attn.{x}_proj.weight" for x in "qkv"} | {"model.layers.0.mlp.gate_up_proj.weight"}
    layer = LayerWeights(WeightLayout(hf_fused=("qkv", "gate_up")), shape, {}, 0, names)
    for difference in load_spec("phi3").wanted():
        difference.weights(layer)
    assert layer.slots["qkv"][0].hf == tuple(f"self_attn.{x}_proj.weight" for x in "qkv")
    assert layer.slots["mlp_in"][0].hf == ("mlp.gate_up_proj.weight",)


def test_a_tree_with_gate_and_up_apart_is_refused_by_name():
    """A tree whose MLP keeps the up projection in a tensor of its own (Habana's hand port) cannot
    take HF's one gate_up_proj tensor back: refused, naming the tensor."""
    from porter.errors import PorterError

    shape = ModelShape(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=96, vocab_size=64)
    layer = LayerWeights(WeightLayout(up="dense_h_to_4h_swiglu", hf_fused=("gate_up",)), shape, {})
    with pytest.raises(PorterError) as info:
        for difference in load_spec("phi3").wanted():
            difference.weights(layer)
    assert "mlp.gate_up_proj" in info.value.message and info.value.found == "mlp.dense_h_to_4h.weight <- mlp.gate_proj.weight"
