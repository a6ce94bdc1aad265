"""BigScience's gate-second GLU (bigscience-workshop 8387ae17: `--glu-activation swiglu`, one
fused projection 2*ffn wide, x1, x2 = chunk; x1 * silu(x2)): porter reuses the tree's switch and
implementation, converts HF -> Megatron -> HF bit for bit with the gate in the second half of
every shard, and the port verifies against HF (issue 13: the unit test with a gate-second tree)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.cli import app
from porter.port import prepare
from porter.verify.parity import VerifyOptions, verify
from tests.variants.conftest import (
    LLAMA,
    convert_round_trip,
    first_layer_shards,
    passed,
    reapply_then_revert,
    tiny_hf,
)

TRANSFORMER = "megatron/model/transformer.py"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-llama")


def test_porter_reuses_the_trees_glu(gate_second_tree):
    port = gate_second_tree.port
    switch = port.profile.spellings["swiglu"]
    assert (switch.option, switch.origin, switch.implemented) == ("--glu-activation", "tree", True)
    assert "megatron/model/swiglu.py" not in gate_second_tree.changed  # no implementation of porter's
    assert not [e for e in port.plan.edits if e.feature == "swiglu" and e.file == TRANSFORMER]
    text = (gate_second_tree.root / "megatron/arguments.py").read_text()
    assert text.count("'--glu-activation'") == 1 and "'--activation-func-type'" not in text
    assert "glu_activation='swiglu'," in (gate_second_tree.root / "pretrain_llama.py").read_text()
    assert convert.Port(LLAMA, gate_second_tree.root).layout.gate_first is False


def test_inspect_says_gate_second(gate_second_tree):
    result = CliRunner().invoke(app, ["inspect", "llama", "--target", str(gate_second_tree.root)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "swiglu: reuses the tree's --glu-activation and its implementation (gate second" in text


@pytest.mark.parametrize("tp", [1, 2])
def test_convert_round_trip_is_bit_exact_with_the_gate_second(gate_second_tree, hf_dir, tmp_path, tp):
    """HF -> Megatron -> HF bit for bit, and every shard of the fused projection holds
    [up_r; gate_r]: the tree's chunk gives x1 = up, x2 = gate, and it computes x1 * silu(x2)."""
    ckpt = convert_round_trip(gate_second_tree, hf_dir, tmp_path, tp)
    _, state = convert.read_hf(hf_dir)
    gate, up = state["model.layers.0.mlp.gate_proj.weight"], state["model.layers.0.mlp.up_proj.weight"]
    layout = convert.Port(LLAMA, gate_second_tree.root).layout
    ffn = gate.shape[0] // tp
    for rank, layer in enumerate(first_layer_shards(ckpt, layout, tp)):
        fused = layer[f"{layout.mlp}.{layout.fc1}.weight"]
        rows = slice(rank * ffn, (rank + 1) * ffn)
        assert torch.equal(fused[:ffn], up[rows]) and torch.equal(fused[ffn:], gate[rows]), f"rank {rank}"


def test_a_second_apply_plans_nothing(gate_second_tree):
    assert prepare(LLAMA, gate_second_tree.root).changes == []


def test_verify_passes(gate_second_tree, tmp_path):
    passed(verify(LLAMA, gate_second_tree.root, tmp_path), ["LLaMAModel", "LLaMAModelPipe"])


@pytest.mark.slow  # 60-120 s on 2 cores; the TP=2 shards' order is also checked by the conversion test
def test_verify_passes_at_tp2(gate_second_tree, tmp_path):
    """Two ranks each chunk their own shard: the shard order is the tree's, not just the full weight."""
    passed(verify(LLAMA, gate_second_tree.root, tmp_path, VerifyOptions(tensor_parallel=2, kinds=("model",))),
           ["LLaMAModel"])


def test_reapply_then_revert_is_byte_identical(gate_second_tree, tmp_path):
    reapply_then_revert(gate_second_tree, tmp_path)
