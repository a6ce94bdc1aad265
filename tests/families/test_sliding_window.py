"""The sliding window's semantics, read off HF's MistralForCausalLM itself, and the mask function
porter writes into the tree (megatron/model/sliding_window.py, as generated/mistral holds it)."""

import importlib.util
from pathlib import Path

import pytest
import torch

GENERATED = Path(__file__).resolve().parents[2] / "generated" / "mistral" / "megatron" / "model"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"porter_test_{name}", GENERATED / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def window_module():
    return _module("sliding_window")


def causal(s):
    return torch.ones(s, s, dtype=torch.bool).triu(1).view(1, 1, s, s)


def hf_keys_seen(window: int, seq: int) -> dict[int, set[int]]:
    """query position -> the key positions it reads, in a one-layer MistralForCausalLM: changing
    the token at j changes the logits at i exactly when i reads j."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=window,
                           max_position_embeddings=seq)
    config._attn_implementation = "sdpa"
    model = MistralForCausalLM(config).float().eval()
    tokens = torch.randint(0, 64, (1, seq))
    with torch.no_grad():
        base = model(tokens).logits[0]
        seen: dict[int, set[int]] = {i: set() for i in range(seq)}
        for j in range(seq):
            changed = tokens.clone()
            changed[0, j] = (changed[0, j] + 1) % 64
            moved = (model(changed).logits[0] - base).abs().amax(-1) > 1e-6
            for i in torch.nonzero(moved).flatten().tolist():
                seen[i].add(j)
    return seen


def test_query_i_sees_key_j_when_i_minus_j_is_below_the_window_in_hf_and_in_porters_mask(window_module):
    """HF's Mistral: token i reads token j when 0 <= i - j < window (the window counts the
    query itself). porter's mask keeps exactly those keys."""
    window, seq = 4, 12
    expected = {i: {j for j in range(seq) if 0 <= i - j < window} for i in range(seq)}
    assert hf_keys_seen(window, seq) == expected
    mask = window_module.sliding_window_mask(causal(seq), window, torch.zeros(seq, 1, 1, 1))
    kept = {i: {j for j in range(seq) if not mask[0, 0, i, j]} for i in range(seq)}
    assert kept == expected


def test_a_window_as_long_as_the_mask_hands_the_same_mask_back(window_module):
    """No key is older than the window: the fused kernel still sees an exactly causal mask (is_causal)."""
    mask = causal(8)
    assert window_module.sliding_window_mask(mask, 8, torch.zeros(8, 1, 1, 1)) is mask
    assert window_module.sliding_window_mask(mask, 0, torch.zeros(8, 1, 1, 1)) is mask
    assert window_module.sliding_window_mask(mask, None, torch.zeros(8, 1, 1, 1)) is mask


def test_the_windowed_mask_is_built_once_per_mask(window_module):
    """Every layer of a step (every step of the pipe model) passes the same mask object."""
    mask, key = causal(16), torch.zeros(16, 2, 1, 4)
    first = window_module.sliding_window_mask(mask, 4, key)
    assert first is not mask and window_module.sliding_window_mask(mask, 4, key) is first
    assert window_module.sliding_window_mask(mask, 5, key) is not first  # another window, another mask
    other = causal(16)
    again = window_module.sliding_window_mask(other, 4, key)
    assert again is not first and torch.equal(again, first)


def test_the_last_query_row_of_a_cache_step_keeps_absolute_positions(window_module):
    """A mask with fewer rows than keys holds the last queries: row r is position r + sk - sq."""
    full = window_module.sliding_window_mask(causal(10), 3, torch.zeros(10, 1, 1, 1))
    last_rows = causal(10)[..., 7:, :]
    assert torch.equal(window_module.sliding_window_mask(last_rows, 3, torch.zeros(10, 1, 1, 1)), full[..., 7:, :])


def test_no_mask_gives_the_causal_band_and_a_float_mask_is_refused(window_module):
    band = window_module.sliding_window_mask(None, 3, torch.zeros(6, 1, 1, 1))
    expected = torch.tensor([[not (0 <= i - j < 3) for j in range(6)] for i in range(6)])
    assert torch.equal(band, expected)
    with pytest.raises(TypeError, match="bool attention mask"):
        window_module.sliding_window_mask(torch.zeros(1, 1, 6, 6), 3, torch.zeros(6, 1, 1, 1))


def test_the_fused_kernel_takes_the_windowed_mask_as_a_mask(window_module):
    """porter's fused attention passes a non-causal mask to SDPA: the same numbers as the
    masked softmax written out."""
    fused = _module("fused_attention")

    class Softmax:
        scale = None
        attn_mask_type = None

    torch.manual_seed(0)
    sq, b, heads, hn = 12, 2, 4, 8
    q, k, v = (torch.randn(sq, b, heads, hn) for _ in range(3))
    mask = window_module.sliding_window_mask(causal(sq), 4, k)
    context = fused.fused_attention(q, k, v, mask, alpha=hn ** -0.5, softmax=Softmax())
    scores = torch.einsum("sbnh,tbnh->bnst", q, k) * hn ** -0.5
    probs = scores.masked_fill(mask, float("-inf")).softmax(-1)
    expected = torch.einsum("bnst,tbnh->sbnh", probs, v).reshape(sq, b, heads * hn)
    torch.testing.assert_close(context, expected)
    assert not fused._exactly_causal(mask, sq, sq) and fused._exactly_causal(causal(sq), sq, sq)
