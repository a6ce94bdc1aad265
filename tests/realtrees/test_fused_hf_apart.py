"""Opt-in (PORTER_REAL_TREES): Phi-3's fused HF projections on real trees that keep their parts
in tensors of their own.

- Habana Model-References 7086aadb (hab-llama): its LLaMA port's gated MLP keeps the gate
  (`dense_h_to_4h`) and the up projection (`dense_h_to_4h_swiglu`) apart. Before porter cut
  HF's one `mlp.gate_up_proj` into the two, `porter verify phi3` stopped at convert (exit 2).
- deep-spin 4e33e780 and OpenLLM-France a106b248 (dspin-head, ollf-head): their own GQA projects
  q (`query`) and (k, v) (`key_value`) apart; a Phi-3 with fewer key/value heads than query heads
  (as Phi-3-medium: 40 heads, 10 key/value heads) has its `self_attn.qkv_proj` cut into the two.

Each: the port applies, verify passes for both classes, and HF -> the tree's checkpoint at TP=2
-> HF gives back the same bits, each rank holding its shard of each part (read as transformers'
Phi3MLP / Phi3Attention read the fused tensors). A case takes 2-4 minutes on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.realtrees.acceptance import Acceptance, check_verify, porter, user_environment
from tests.realtrees.trees import NEEDS_TREES, copy_of

pytestmark = NEEDS_TREES

HEADS, HEAD_SIZE, FFN = 4, 16, 160


def tiny_phi3(folder: Path, kv_heads: int) -> Path:
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(hidden_size=HEADS * HEAD_SIZE, intermediate_size=FFN, num_hidden_layers=2,
                        num_attention_heads=HEADS, num_key_value_heads=kv_heads, vocab_size=250,
                        max_position_embeddings=64, rms_norm_eps=1e-5, sliding_window=2047, tie_word_embeddings=False,
                        bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    model = Phi3ForCausalLM(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


def expected_parts(state: dict, kv_heads: int, gate: str, up: str, query: str, key_value: str) -> dict:
    """The full tensor of each of the tree's parts, from HF's fused ones as transformers reads them."""
    from porter.convert.pieces import joined
    from porter.differences.grouped_query.weights import fuse_kv

    out = {}
    gate_t, up_t = state["model.layers.0.mlp.gate_up_proj.weight"].chunk(2, dim=0)  # Phi3MLP
    if gate:
        out.update({gate: gate_t, up: up_t})
    if query:
        q, k, v = state["model.layers.0.self_attn.qkv_proj.weight"].split(
            [HEADS * HEAD_SIZE, kv_heads * HEAD_SIZE, kv_heads * HEAD_SIZE])  # Phi3Attention
        out.update({query: q, key_value: joined(fuse_kv(k, v, kv_heads))})
    return out


def first_layer_files(ckpt: Path) -> list[dict]:
    """Each tensor-parallel rank's first transformer layer (the pipeline engine's layer files)."""
    files = sorted((ckpt / "release").glob("layer_*-model_*-model_states.pt"))
    layers = [f for f in files if "input_layernorm.weight" in torch.load(f, weights_only=False)]
    first = layers[0].name.split("-")[0]
    return [torch.load(f, weights_only=False) for f in layers if f.name.startswith(first + "-")]


CASES = [  # tree, kv heads, the tree's gate and up tensors (apart), its query and key/value tensors (apart)
    ("hab-llama", HEADS, "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h_swiglu.weight", "", ""),
    ("dspin-head", 2, "", "", "self_attention.query.weight", "self_attention.key_value.weight"),
    ("ollf-head", 2, "", "", "self_attention.query.weight", "self_attention.key_value.weight"),
]


@pytest.mark.parametrize("label, kv_heads, gate, up, query, key_value", CASES, ids=[c[0] for c in CASES])
def test_phi3_with_the_trees_parts_apart_verifies_and_round_trips_at_tp2(label, kv_heads, gate, up, query,
                                                                          key_value, tmp_path):
    from porter import convert

    tree = copy_of(label, tmp_path / label)
    hf = tiny_phi3(tmp_path / "hf", kv_heads)
    model = "phi3" if kv_heads == HEADS else str(hf)  # GQA: the model's own config.json (num_key_value_heads)
    env = user_environment()
    applied = porter(["apply", model, "--target", str(tree)], env)
    assert applied.returncode == 0, applied.stderr
    result = Acceptance(label)
    check_verify(tree, env, result, model)
    assert result.verifies, result.notes
    assert len(result.max_logit_diff) == 2 and all(d <= 1e-5 for d in result.max_logit_diff.values())

    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    done = porter(["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", model,
                   "--target", str(tree), "--tp", "2"], env)
    assert done.returncode == 0, done.stderr
    (_, state) = convert.read_hf(hf)
    ranks = first_layer_files(ckpt)
    assert len(ranks) == 2
    for key, full in expected_parts(state, kv_heads, gate, up, query, key_value).items():
        for rank, held in enumerate(ranks):
            assert torch.equal(held[key], full.chunk(2, dim=0)[rank]), (key, rank)
    done = porter(["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back), "--model", model,
                   "--target", str(tree)], env)
    assert done.returncode == 0, done.stderr
    (_, state2) = convert.read_hf(back)
    assert sorted(state2) == sorted(state)
    assert "model.layers.1.mlp.gate_up_proj.weight" in state2 and "model.layers.1.self_attn.qkv_proj.weight" in state2
    for name, t in state.items():
        assert torch.equal(state2[name], t), name
