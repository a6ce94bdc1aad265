"""An RMSNorm switch whose class exists only with apex (OpenLLM-France a106b248, deep-spin 4e33e780:
`except ImportError: MixedFusedRMSNorm = None`): porter reuses the tree's --normalization, repairs
the None fallback as an explained edit (porter's RMSNorm stands in where apex is missing), and
the port builds and verifies against HF on a CPU machine (issue 13 item 3)."""

from __future__ import annotations

from typer.testing import CliRunner

from porter.cli import app
from porter.port import prepare
from porter.verify.parity import verify
from tests.variants.conftest import LLAMA, passed, reapply_then_revert

FILES = ("megatron/model/transformer.py", "megatron/model/gpt_model.py")
FALLBACK = "from megatron.model.rmsnorm import RMSNorm as MixedFusedRMSNorm"
REASON = "the tree binds MixedFusedRMSNorm to None when its import fails"


def test_porter_reuses_the_trees_switch_and_repairs_its_fallback(rmsnorm_apex_only_tree):
    port = rmsnorm_apex_only_tree.port
    switch = port.profile.spellings["rmsnorm"]
    assert (switch.option, switch.origin, switch.implemented) == ("--normalization", "tree", True)
    repairs = [e for e in port.plan.edits if e.name == "FallbackImport"]
    assert sorted(e.file for e in repairs) == sorted(FILES)
    assert all(e.feature == "rmsnorm" and REASON in e.reason for e in repairs)
    assert "megatron/model/rmsnorm.py" in rmsnorm_apex_only_tree.changed
    for rel in FILES:
        text = (rmsnorm_apex_only_tree.root / rel).read_text()
        pristine = (rmsnorm_apex_only_tree.pristine / rel).read_text()
        assert "MixedFusedRMSNorm = None" in pristine and "MixedFusedRMSNorm = None" not in text
        assert text.count(FALLBACK) == 1
        assert "    from apex.normalization import MixedFusedRMSNorm\n" in text  # apex still first
    # the norm sites themselves are the tree's, untouched
    transformer = (rmsnorm_apex_only_tree.root / FILES[0]).read_text()
    assert transformer.count("MixedFusedRMSNorm(args.hidden_size, args.layernorm_epsilon)") == 3


def test_explain_names_the_repair(rmsnorm_apex_only_tree):
    path = rmsnorm_apex_only_tree.root / FILES[1]
    line = path.read_text().splitlines().index("    " + FALLBACK) + 1
    explained = CliRunner().invoke(app, ["explain", f"{path}:{line}"])
    assert explained.exit_code == 0, explained.output
    text = " ".join(explained.output.split())
    assert "spec key: rmsnorm" in text and "FallbackImport" in text and REASON in text


def test_a_second_apply_plans_nothing(rmsnorm_apex_only_tree):
    assert prepare(LLAMA, rmsnorm_apex_only_tree.root).changes == []


def test_verify_passes(rmsnorm_apex_only_tree, tmp_path):
    passed(verify(LLAMA, rmsnorm_apex_only_tree.root, tmp_path), ["LLaMAModel", "LLaMAModelPipe"])


def test_reapply_then_revert_is_byte_identical(rmsnorm_apex_only_tree, tmp_path):
    reapply_then_revert(rmsnorm_apex_only_tree, tmp_path)
