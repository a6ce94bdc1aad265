"""Phi-3's sliding window (2047 on Phi-3-mini-4k) has Mistral's meaning, read off transformers'
Phi3ForCausalLM itself: query i reads key j when 0 <= i - j < window, the query counted; the mask
porter writes for phi3 (generated/phi3/megatron/model/sliding_window.py) keeps exactly those keys."""

import importlib.util
from pathlib import Path

import torch

from porter.catalog import load_spec

GENERATED = Path(__file__).resolve().parents[2] / "generated" / "phi3" / "megatron" / "model" / "sliding_window.py"


def phi3_keys_seen(window: int, seq: int) -> dict[int, set[int]]:
    """query position -> the key positions it reads, in a one-layer Phi3ForCausalLM (a token j
    changed moves the logits at i exactly when i reads j)."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    config = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=4, sliding_window=window, max_position_embeddings=seq, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2)
    config._attn_implementation = "sdpa"
    model = Phi3ForCausalLM(config).float().eval()
    tokens = torch.randint(3, 64, (1, seq))
    seen: dict[int, set[int]] = {i: set() for i in range(seq)}
    with torch.no_grad():
        base = model(tokens).logits[0]
        for j in range(seq):
            changed = tokens.clone()
            changed[0, j] = (changed[0, j] + 1) % 64
            for i in torch.nonzero((model(changed).logits[0] - base).abs().amax(-1) > 1e-6).flatten().tolist():
                seen[i].add(j)
    return seen


def test_phi3s_window_counts_the_query_in_transformers_and_in_porters_mask():
    assert load_spec("phi3")["attention.sliding_window"] == 2047  # the config's number, taken as it is
    window, seq = 4, 12
    expected = {i: {j for j in range(seq) if 0 <= i - j < window} for i in range(seq)}
    assert phi3_keys_seen(window, seq) == expected
    spec = importlib.util.spec_from_file_location("phi3_sliding_window", GENERATED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    causal = torch.ones(seq, seq, dtype=torch.bool).triu(1).view(1, 1, seq, seq)
    mask = module.sliding_window_mask(causal, window, torch.zeros(seq, 1, 1, 1))
    assert {i: {j for j in range(seq) if not mask[0, 0, i, j]} for i in range(seq)} == expected
