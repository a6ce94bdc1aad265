"""Phi-3.5's longrope in the rotary embedding porter writes (generated/phi3_5), with the numbers its
entry point sets (generated/phi3_5/pretrain_phi3_5.py), against transformers' Phi3RotaryEmbedding
read from the published config.json: the same cos and sin, bit for bit, for a sequence as long
as the original context (the short factors) and one position longer (the long ones), on the
cached tables and on per-sequence positions; and a swap of the two lists is seen."""

import ast
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "generated" / "phi3_5"
CONFIG = Path(__file__).parent / "data" / "hf_configs" / "microsoft--Phi-3.5-mini-instruct.json"


@pytest.fixture(scope="module")
def rotary():
    spec = importlib.util.spec_from_file_location("phi3_5_rotary", GENERATED / "megatron" / "model" / "rotary_embedding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def args():
    """The defaults the generated entry point sets (parser.set_defaults), as the tree's args."""
    tree = ast.parse((GENERATED / "pretrain_phi3_5.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "set_defaults")
    defaults = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    defaults.setdefault("rope_scaling_attention_factor", None)  # the option's own default
    return SimpleNamespace(**defaults)


def hf_rotary(original=None):
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    data = json.loads(CONFIG.read_text())
    if original is not None:  # the factor stays the real model's 32, stated (as porter writes it)
        data["original_max_position_embeddings"] = original
        data["rope_scaling"]["factor"] = 32.0
    return Phi3RotaryEmbedding(Phi3Config(**{k: v for k, v in data.items() if k != "model_type"}))


def tables(embedding, length):
    cos, sin = embedding._tables(length, torch.device("cpu"), torch.float32)
    return cos[:, 0, 0], sin[:, 0, 0]


@pytest.mark.parametrize("length", [4096, 4097], ids=["short-at-the-original-length", "long-one-past-it"])
def test_longrope_cos_sin_are_transformers_at_both_sides_of_the_original_context(rotary, args, length):
    scaling = rotary.rope_scaling_of(args)
    assert scaling["type"] == "longrope" and scaling["original_max_position_embeddings"] == 4096
    ours = rotary.RotaryEmbedding(96, theta=args.rope_theta, scaling=scaling)
    assert ours.attention_scaling == math.sqrt(1 + math.log(32) / math.log(4096))  # 1.19, applied at every length
    positions = torch.arange(length).unsqueeze(0)
    cos, sin = hf_rotary()(torch.zeros(1, dtype=torch.float32), positions)
    mine_cos, mine_sin = tables(ours, length)
    assert torch.equal(mine_cos, cos[0]) and torch.equal(mine_sin, sin[0])
    # the other list gives other angles at this length: the choice is what the test sees
    other = rotary.RotaryEmbedding(96, theta=args.rope_theta, scaling={
        **scaling, "short_factor": scaling["long_factor"], "long_factor": scaling["short_factor"]})
    assert not torch.equal(tables(other, length)[0], cos[0])


def test_the_table_follows_the_length_both_ways(rotary, args):
    """A long sequence after a short one (and back) takes the long list, then the short one again."""
    ours = rotary.RotaryEmbedding(96, theta=args.rope_theta, scaling=rotary.rope_scaling_of(args))
    short = tables(ours, 4096)[0].clone()
    long = tables(ours, 4097)[0]
    assert not torch.equal(long[:4096], short)
    assert torch.equal(tables(ours, 100)[0], short[:100])


@pytest.mark.parametrize("restart", [6, 2], ids=["longest-row-beyond-the-original", "every-row-within-it"])
def test_per_sequence_positions_choose_by_the_batchs_longest_sequence(rotary, args, restart):
    """--reset-position-ids: positions [b, s] restarting mid-row; transformers chooses the list by
    max(position_ids) + 1 over the batch (an original context of 8 here)."""
    args8 = SimpleNamespace(**{**vars(args), "rope_scaling_original_max_positions": 8})
    ours = rotary.RotaryEmbedding(96, theta=args.rope_theta, scaling=rotary.rope_scaling_of(args8))
    s = 12
    rows = [torch.cat((torch.arange(restart), torch.arange(s - restart))), torch.cat((torch.arange(4), torch.arange(s - 4)))]
    if restart == 2:
        rows = [torch.cat((torch.arange(restart), torch.arange(6), torch.arange(4))), torch.arange(8).repeat(2)[:s]]
    positions = torch.stack(rows)
    cos, sin = hf_rotary(original=8)(torch.zeros(1, dtype=torch.float32), positions)
    mine_cos, mine_sin = ours._per_sequence(positions, torch.float32)  # [s, b, 1, hn]
    assert torch.equal(mine_cos[:, :, 0].transpose(0, 1), cos) and torch.equal(mine_sin[:, :, 0].transpose(0, 1), sin)


def test_factor_lists_of_the_wrong_length_are_refused_by_the_tree(rotary, args):
    with pytest.raises(ValueError, match="needs 32 numbers"):
        rotary.RotaryEmbedding(64, theta=10000.0, scaling=rotary.rope_scaling_of(args))
