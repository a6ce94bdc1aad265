"""Habana's hand port (HabanaAI/Model-References 7086aadb): `--activation-func-type` and `--no-bias`
registered the tree's own way, the gate `dense_h_to_4h` (silu) times a separate up projection
`dense_h_to_4h_swiglu`, and `bias = not args.no_bias` on every linear but that one. porter takes
the tree's spellings as implemented switches, repairs the missing `bias=` as an explained edit,
converts the separate gate/up pair bit for bit, and the port verifies against HF."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.cli import app
from porter.differences.gated_mlp import SEPARATE
from porter.port import prepare
from porter.verify.parity import verify
from tests.variants.conftest import (
    LLAMA,
    convert_round_trip,
    first_layer_shards,
    passed,
    reapply_then_revert,
    tiny_hf,
)

TRANSFORMER = "megatron/model/transformer.py"
REPAIR = "repairs ParallelMLP: dense_h_to_4h_swiglu kept a bias under the tree's --no-bias"


def _class_source(text: str, name: str) -> str:
    start = text.index(f"class {name}(")
    return text[start:text.index("\nclass ", start + 1)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-llama")


def test_the_trees_spellings_are_its_implemented_switches(hand_port_tree):
    spellings = hand_port_tree.port.profile.spellings
    swiglu, no_bias = spellings["swiglu"], spellings["no_bias"]
    assert (swiglu.option, swiglu.origin, swiglu.implemented, swiglu.layout) == (
        "--activation-func-type", "tree", True, SEPARATE)
    assert (no_bias.option, no_bias.origin, no_bias.implemented) == ("--no-bias", "tree", True)
    arguments = (hand_port_tree.root / "megatron/arguments.py").read_text()
    assert arguments.count("'--activation-func-type'") == 1 and arguments.count("'--no-bias'") == 1
    assert "megatron/model/swiglu.py" not in hand_port_tree.changed
    edits = {(e.feature, e.name) for e in hand_port_tree.port.plan.edits}
    assert ("swiglu", "FusedGateUp") not in edits and ("no_bias", "NoneSafeExpandAs") not in edits
    layout = convert.Port(LLAMA, hand_port_tree.root).layout
    assert (layout.fc1, layout.up) == ("dense_h_to_4h", "dense_h_to_4h_swiglu")


def test_inspect_says_what_it_reuses_and_repairs(hand_port_tree):
    result = CliRunner().invoke(app, ["inspect", "llama", "--target", str(hand_port_tree.pristine)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "swiglu: reuses the tree's --activation-func-type and its implementation (separate projections" in text
    assert "no_bias: reuses the tree's --no-bias and its implementation" in text
    assert REPAIR in text


def test_the_missing_bias_is_repaired_as_an_explained_edit(hand_port_tree):
    """Exactly that linear gets `bias=`; `porter explain` on its line names the reason."""
    path = hand_port_tree.root / TRANSFORMER
    text = path.read_text()
    mlp, pristine_mlp = _class_source(text, "ParallelMLP"), _class_source(
        (hand_port_tree.pristine / TRANSFORMER).read_text(), "ParallelMLP")
    up = mlp[mlp.index("self.dense_h_to_4h_swiglu = mpu.ColumnParallelLinear("):]
    up = up[:up.index(")\n") + 1]
    assert "bias=not args.no_bias" in up
    assert mlp.count("bias=not args.no_bias") == pristine_mlp.count("bias=not args.no_bias") + 1 == 3
    attention = "ParallelAttention"
    assert _class_source(text, attention).count("bias=") == _class_source(
        (hand_port_tree.pristine / TRANSFORMER).read_text(), attention).count("bias=")
    line = text[:text.index(up)].count("\n") + next(
        i for i, row in enumerate(up.splitlines()) if "bias=not args.no_bias" in row) + 1
    explained = CliRunner().invoke(app, ["explain", f"{path}:{line}"])
    assert explained.exit_code == 0, explained.output
    assert "bias=not args.no_bias" in explained.output.splitlines()[0]
    assert "spec key: no_bias" in explained.output and REPAIR in " ".join(explained.output.split())


@pytest.mark.parametrize("tp", [1, 2])
def test_convert_round_trip_is_bit_exact_with_a_separate_gate(hand_port_tree, hf_dir, tmp_path, tp):
    """HF -> Megatron -> HF bit for bit; each shard holds its rows of HF's gate in dense_h_to_4h
    and of HF's up in dense_h_to_4h_swiglu, and no bias on either (the tree runs with --no-bias)."""
    ckpt = convert_round_trip(hand_port_tree, hf_dir, tmp_path, tp)
    _, state = convert.read_hf(hf_dir)
    gate, up = state["model.layers.0.mlp.gate_proj.weight"], state["model.layers.0.mlp.up_proj.weight"]
    layout = convert.Port(LLAMA, hand_port_tree.root).layout
    ffn = gate.shape[0] // tp
    for rank, layer in enumerate(first_layer_shards(ckpt, layout, tp)):
        rows = slice(rank * ffn, (rank + 1) * ffn)
        assert torch.equal(layer[f"{layout.mlp}.{layout.fc1}.weight"], gate[rows]), f"rank {rank}"
        assert torch.equal(layer[f"{layout.mlp}.{layout.up}.weight"], up[rows]), f"rank {rank}"
        assert not [key for key in layer if key.endswith(".bias")], f"rank {rank}"


def test_a_second_apply_plans_nothing(hand_port_tree):
    assert prepare(LLAMA, hand_port_tree.root).changes == []


def test_verify_passes(hand_port_tree, tmp_path):
    """Without the repair the tree's model would hold dense_h_to_4h_swiglu.bias, which no LLaMA
    weight fills: verify reports it as a structure difference and fails."""
    passed(verify(LLAMA, hand_port_tree.root, tmp_path), ["LLaMAModel", "LLaMAModelPipe"])


def test_reapply_then_revert_is_byte_identical(hand_port_tree, tmp_path):
    reapply_then_revert(hand_port_tree, tmp_path)
