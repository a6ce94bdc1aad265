"""`porter convert` for Phi-3.5 both ways at TP=2 and PP=2: HF's fused qkv_proj and gate_up_proj
cut into the tree's per-head q, k, v and its gate+up halves per rank, and made again, bit for
bit; the longrope numbers (lists, original context, factor) carried in the checkpoint's args and
back into config.json; and the tree loads the checkpoint with its own --load and gives HF's logits.
The Weight entries themselves: the fused tensors cut as Phi3Attention and Phi3MLP read them, under
grouped-query shapes too, on real and on meta tensors; and on a tree that keeps the fused
projections' parts in tensors of their own (gate apart from up, q apart from (k, v)), each cut
at its rows' offsets and joined back by convert's engine, at TP=1 and TP=2, a wrong offset
caught both ways."""

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.convert.pieces import as_meta, joined
from porter.convert.sharding import shard_layer, unshard_tensor
from porter.convert.tensors import Take, hf_layer_to_megatron, megatron_layer_to_hf
from porter.cli import app
from porter.layout import WeightLayout
from porter.verify.parity import VerifyOptions, verify
from porter.weights import LayerWeights, ModelShape, ModelWeights, fuse_qkv

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


APART = WeightLayout(up="dense_h_to_4h_swiglu", gqa_query="query", gqa_key_value="key_value",
                     hf_fused=("qkv", "gate_up"))


class UpAtTheGatesOffset:
    """Broken on purpose: the up tensor's rows of gate_up_proj taken at the gate's offset."""

    def weights(self, layer):
        from dataclasses import replace

        from porter.weights import Rows

        layer.slots["mlp_in"] = [replace(w, hf_rows=(Rows(0, 96, 192),)) if w.key.endswith("_swiglu.weight") else w
                                 for w in layer.slots["mlp_in"]]


def apart_layer(*broken):
    """A tiny Phi-3 layer (GQA: 4 heads, 2 key/value heads) in HF's tensors, and the weights of a
    tree that keeps gate apart from up and q apart from (k, v)."""
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer

    config = Phi3Config(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=1, vocab_size=64, pad_token_id=0)
    torch.manual_seed(0)
    hf = {f"model.layers.0.{k}": v.detach() for k, v in Phi3DecoderLayer(config, 0).state_dict().items()}
    shape = ModelShape(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=96, vocab_size=64,
                       kv_heads=2)
    spec = load_spec("phi3").with_values(**{"attention.num_query_groups": 2})
    return hf, ModelWeights(APART, shape, {}, [*spec.wanted(), *broken])


def apart_expected(hf, tp, rank):
    """What rank `rank` of `tp` holds of each of the tree's tensors, read as Phi3MLP and
    Phi3Attention read HF's fused tensors (Megatron's column-parallel linears: rows in tp parts)."""
    from porter.differences.grouped_query.weights import fuse_kv

    gate, up = hf["model.layers.0.mlp.gate_up_proj.weight"].chunk(2, dim=0)  # Phi3MLP: the gate first
    q, k, v = hf["model.layers.0.self_attn.qkv_proj.weight"].split([4 * 16, 2 * 16, 2 * 16])  # Phi3Attention
    kv = joined(fuse_kv(k, v, 2))  # per key/value head [ng, 2, hn]
    return {key: t.chunk(tp, dim=0)[rank] for key, t in {
        "mlp.dense_h_to_4h.weight": gate, "mlp.dense_h_to_4h_swiglu.weight": up,
        "attention.query.weight": q, "attention.key_value.weight": kv}.items()}


def differing(held, want):
    return sorted(key for key, t in want.items() if held[key].shape != t.shape or not torch.equal(held[key], t))


@pytest.mark.parametrize("tp", [1, 2])
def test_gate_apart_from_up_and_q_apart_from_kv_are_cut_from_and_joined_into_the_fused_tensors(tp):
    """A tree keeping gate and up in tensors of their own (Habana's hand port), and q apart from
    (k, v) (a tree's own GQA): each tensor is its rows of HF's one gate_up_proj / qkv_proj, each
    rank holds its shard of each, and the fused tensors come back whole, bit for bit."""
    hf, weights = apart_layer()
    by_key = {w.key: w for w in weights.layer(0)}
    assert by_key["mlp.dense_h_to_4h.weight"].hf == by_key["mlp.dense_h_to_4h_swiglu.weight"].hf \
        == ("mlp.gate_up_proj.weight",)
    assert [(r.start, r.stop, r.total) for key in ("mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h_swiglu.weight",
                                                   "attention.query.weight", "attention.key_value.weight")
            for r in by_key[key].hf_rows] == [(0, 96, 192), (96, 192, 192), (0, 64, 128), (64, 128, 128)]
    tree = {k: joined(v) for k, v in hf_layer_to_megatron(Take.of(hf), 0, weights).items()}
    roles = weights.roles(0)
    ranks = [shard_layer(tree, roles, tp, rank) for rank in range(tp)]
    for rank, held in enumerate(ranks):
        assert differing(held, apart_expected(hf, tp, rank)) == [], rank
    back = megatron_layer_to_hf({k: unshard_tensor([r[k] for r in ranks], roles[k]) for k in tree}, 0, weights)
    assert sorted(back) == sorted(hf)
    for name, t in hf.items():
        assert torch.equal(joined(back[name]), t), name


def test_a_wrong_offset_of_the_up_rows_fails_both_ways():
    """Broken on purpose: the up tensor cut at the gate's offset is not HF's up projection (the
    check above names it), and on the way back gate and up overlap and leave HF's up rows out:
    refused, naming the fused tensor, rather than written as a wrong one."""
    from porter.errors import PorterError

    hf, weights = apart_layer(UpAtTheGatesOffset())
    tree = {k: joined(v) for k, v in hf_layer_to_megatron(Take.of(hf), 0, weights).items()}
    assert differing(tree, apart_expected(hf, 1, 0)) == ["mlp.dense_h_to_4h_swiglu.weight"]
    with pytest.raises(PorterError, match="once end to end") as info:
        megatron_layer_to_hf(tree, 0, weights)
    assert info.value.construct == "model.layers.0.mlp.gate_up_proj.weight"
