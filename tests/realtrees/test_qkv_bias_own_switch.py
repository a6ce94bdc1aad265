"""Opt-in (PORTER_REAL_TREES): Qwen2's QKV bias on trees that implement the no-bias switch themselves
(microsoft f4157bea, HabanaAI/Megatron-DeepSpeed 891d6db9, argonne-lcf ffa3456d: Megatron-LM's
`--disable-bias-linear`, `bias=args.add_bias_linear` on every linear). porter keeps the tree's switch
for the attention output and the MLP and ORs `--add-qkv-bias` into the QKV projections' bias; both
classes verify against HF, and the port with that one edit undone (the QKV bias dropped) fails
verify at the attention, with the projection's bias named as missing. Before, porter refused these
trees ("the tree implements --no-bias itself")."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify
from tests.helpers.trees import diff_snapshots, snapshot
from tests.realtrees.trees import NEEDS_TREES, copy_of
from tests.variants.conftest import passed

QWEN2 = load_spec("qwen2")
TRANSFORMER = "megatron/model/transformer.py"
WIDE = "bias=args.add_bias_linear or args.add_qkv_bias,"

pytestmark = NEEDS_TREES


def ported(label: str, tmp_path: Path) -> tuple[Path, dict]:
    tree = copy_of(label, tmp_path / label)
    before = snapshot(tree)
    applied = CliRunner().invoke(app, ["apply", "qwen2", "--target", str(tree)])
    assert applied.exit_code == 0, applied.output
    return tree, before


@pytest.mark.parametrize("label", ["ms-head", "hmd-head", "alcf-head"])
def test_qwen2_keeps_the_trees_bias_switch_and_widens_the_qkv_projection(label, tmp_path):
    tree, before = ported(label, tmp_path)
    text = (tree / TRANSFORMER).read_text()
    assert text.count(WIDE) == 1  # the fused projection (self-attention)
    assert text.count("bias=config.add_bias_linear or args.add_qkv_bias,") == 2  # cross-attention's query, key_value
    assert "bias=self.add_bias," in text  # the MLP follows the tree's switch
    # microsoft's FPDT attention builds its QKV bias by the tree's flag alone: it refuses the switch
    assert text.count("    assert not args.add_qkv_bias, ") == (label == "ms-head")
    assert "not args.no_bias" not in text and "--add-qkv-bias" in (tree / "megatron/arguments.py").read_text()
    script = (tree / "pretrain_qwen2.py").read_text()
    assert "add_bias_linear=False" in script and "add_qkv_bias=True" in script
    reverted = CliRunner().invoke(app, ["revert", "--target", str(tree)])
    assert reverted.exit_code == 0, reverted.output
    assert not diff_snapshots(before, snapshot(tree))


@pytest.mark.slow
@pytest.mark.parametrize("label", ["ms-head", "hmd-head"])
def test_qwen2_verifies_and_without_its_qkv_bias_fails_at_the_attention(label, tmp_path):
    tree, _ = ported(label, tmp_path)
    passed(verify(QWEN2, tree, tmp_path / "verify"), ["Qwen2Model", "Qwen2ModelPipe"])
    path = tree / TRANSFORMER
    path.write_text(path.read_text().replace(WIDE, "bias=args.add_bias_linear,"))
    result = verify(QWEN2, tree, tmp_path / "broken", VerifyOptions(kinds=("model",)))
    assert not result.passed
    (r,) = result.results
    layer = "language_model.encoder.layers.0.self_attention"
    assert r.first_divergence is not None and r.first_divergence.name == f"{layer}.query_key_value", r.as_dict()
    assert f"{layer}.query_key_value.bias" in str(r.structure), r.structure
    print(f"{label} without the QKV bias: first divergence {r.first_divergence.name}, "
          f"max |dlogit| {r.max_logit_diff:.3g}")
