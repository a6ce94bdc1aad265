"""Trees that import apex (issue 22 items 1 and 2).

apex_at_startup (microsoft 69e3c6a0 and 9e72d571, BigScience 8387ae17): apex's optimizers, its
multi-tensor kernels and its RMSNorm imported at start-up with no fallback. On a CPU machine the
port verifies against HF with porter's apex stand-ins, each named.

own_rmsnorm_apex_fallback (llm-jp 9f3e45c7): the tree owns megatron/model/rmsnorm.py and binds
apex's MixedFusedRMSNorm to None without apex. porter leaves the tree's rmsnorm.py as it is and
writes its RMSNorm, the fallback, under a free name.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.smoke import SmokeConfig, run_smoke
from porter.verify.parity import verify
from tests.variants.conftest import LLAMA, passed, python_in_tree, reapply_then_revert

APEX_STANDINS = {"apex.normalization", "apex.optimizers", "amp_C"}


def test_apex_at_startup_verifies_on_the_cpu_with_the_standins_named(apex_at_startup_tree, tmp_path):
    result = verify(LLAMA, apex_at_startup_tree.root, tmp_path)
    passed(result, ["LLaMAModel", "LLaMAModelPipe"])
    assert APEX_STANDINS <= {s.name for s in result.standins}


@pytest.mark.slow
def test_apex_at_startup_trains_on_the_cpu(apex_at_startup_tree, tmp_path):
    result = run_smoke(LLAMA, apex_at_startup_tree.root, tmp_path, SmokeConfig(steps=10))
    assert result.passed, (result.failure, result.log[-3000:])
    assert APEX_STANDINS <= {s.name for s in result.standins}


def test_the_trees_own_rmsnorm_stays_and_porters_takes_a_free_name(own_rmsnorm_apex_fallback_tree):
    ported = own_rmsnorm_apex_fallback_tree
    assert "megatron/model/rmsnorm.py" not in ported.changed
    assert (ported.root / "megatron/model/rmsnorm.py").read_bytes() == \
        (ported.pristine / "megatron/model/rmsnorm.py").read_bytes()
    assert "megatron/model/rmsnorm_porter.py" in ported.changed
    for rel in ("megatron/model/transformer.py", "megatron/model/gpt_model.py"):
        text = (ported.root / rel).read_text()
        assert "from megatron.model.rmsnorm_porter import RMSNorm as MixedFusedRMSNorm" in text
        assert "MixedFusedRMSNorm = None" not in text
    # without apex (and without porter's stand-ins), the model files take porter's RMSNorm
    out = python_in_tree(ported.root, """
        from megatron.model import gpt_model
        print("CLASS", gpt_model.MixedFusedRMSNorm.__module__)
    """)
    assert "CLASS megatron.model.rmsnorm_porter" in out


def test_explain_says_why_the_free_name(own_rmsnorm_apex_fallback_tree):
    explained = CliRunner().invoke(app, ["explain", str(own_rmsnorm_apex_fallback_tree.root /
                                                        "megatron/model/rmsnorm_porter.py:1")])
    assert explained.exit_code == 0, explained.output
    assert "megatron/model/rmsnorm.py is the tree's own" in " ".join(explained.output.split())


def test_own_rmsnorm_verifies_and_reverts(own_rmsnorm_apex_fallback_tree, tmp_path):
    passed(verify(LLAMA, own_rmsnorm_apex_fallback_tree.root, tmp_path / "verify"), ["LLaMAModel", "LLaMAModelPipe"])
    reapply_then_revert(own_rmsnorm_apex_fallback_tree, tmp_path)
