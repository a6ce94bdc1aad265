"""A q | k | v thirds split of the fused QKV output next to the class's own per-group split
method (microsoft/Megatron-DeepSpeed f4157bea, its FPDT rework of ParallelAttention.forward):
the profile reads the layout, porter repairs the split as an explained edit, verify reads the
repaired (per-group) layout from the ported tree and passes; apply stays idempotent and revert
gives the variant back byte for byte. The opt-in test at the end does the same on the real
tree (PORTER_REAL_TREES)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.catalog import profile_of
from porter.cli import app
from porter.errors import PorterError
from porter.port import prepare
from porter.profile.layout import read_layout
from porter.source import SourceTree
from porter.verify.parity import verify
from tests.variants.conftest import LLAMA, passed, reapply_then_revert

TRANSFORMER = "megatron/model/transformer.py"
CALL = "query_layer, key_layer, value_layer = self.split_tensor(mixed_x_layer.view("


def test_the_profile_reads_the_thirds_and_the_split_method(blocked_qkv_tree):
    profile = profile_of(SourceTree.open(blocked_qkv_tree.pristine))
    blocked = profile.facts["qkv_layout"].blocked
    assert profile.facts["qkv_layout"].layout == "blocked"
    assert (blocked.func, blocked.fused, blocked.width, blocked.split_method, blocked.groups) == (
        "forward", "mixed_x_layer", "third", "split_tensor", "self.num_key_value_groups")


def test_verify_refuses_the_unrepaired_layout_and_says_apply_repairs_it(blocked_qkv_tree):
    with pytest.raises(PorterError) as refused:
        read_layout(profile_of(SourceTree.open(blocked_qkv_tree.pristine)), LLAMA)
    assert "third = mixed_x_layer.shape[-1] // 3" in refused.value.found
    assert "porter apply" in refused.value.fix and "split_tensor" in refused.value.fix


def test_the_split_is_repaired_as_an_explained_edit(blocked_qkv_tree):
    edits = [e for e in blocked_qkv_tree.port.plan.edits if e.feature == "qkv_layout"]
    assert len(edits) == 1 and edits[0].file == TRANSFORMER and edits[0].reason.startswith("repair:")
    path = blocked_qkv_tree.root / TRANSFORMER
    text = path.read_text()
    assert "// 3" not in text and text.count(CALL) == 1
    line = text[:text.index(CALL)].count("\n") + 1
    explained = CliRunner().invoke(app, ["explain", f"{path}:{line}"])
    assert explained.exit_code == 0, explained.output
    said = " ".join(explained.output.split())
    assert "GroupedSplitForBlockedThirds" in said and "q | k | v thirds" in said
    # the ported tree's layout is per key/value group (per head here): convert reads it
    profile = profile_of(SourceTree.open(blocked_qkv_tree.root))
    assert profile.facts["qkv_layout"].layout == "per_group" and profile.facts["qkv_layout"].blocked is None


def test_a_second_apply_plans_nothing(blocked_qkv_tree):
    assert prepare(LLAMA, blocked_qkv_tree.root).changes == []


def test_verify_passes(blocked_qkv_tree, tmp_path):
    passed(verify(LLAMA, blocked_qkv_tree.root, tmp_path), ["LLaMAModel", "LLaMAModelPipe"])


def test_reapply_then_revert_is_byte_identical(blocked_qkv_tree, tmp_path):
    reapply_then_revert(blocked_qkv_tree, tmp_path)


REAL = os.environ.get("PORTER_REAL_TREES")


@pytest.mark.realtrees
@pytest.mark.skipif(not REAL or not (Path(REAL or ".") / "ms-head").is_dir(),
                    reason="needs PORTER_REAL_TREES with ms-head/")
def test_microsoft_head_applies_and_verifies(tmp_path):
    """microsoft f4157bea: the thirds split and the [cos, sin] rotary are repaired; both classes verify."""
    tree = tmp_path / "ms-head"
    shutil.copytree(Path(REAL) / "ms-head", tree)
    runner = CliRunner()
    applied = runner.invoke(app, ["apply", "llama", "--target", str(tree)])
    assert applied.exit_code == 0, applied.output
    assert prepare(LLAMA, tree).changes == []
    assert "// 3" not in (tree / TRANSFORMER).read_text() and CALL in (tree / TRANSFORMER).read_text()
    profile = profile_of(SourceTree.open(tree))
    assert profile.facts["qkv_layout"].layout == "per_group" and profile.facts["rotary"].pair is None  # both repaired
    passed(verify(LLAMA, tree, tmp_path / "verify"), ["LLaMAModel", "LLaMAModelPipe"])
