"""Opt-in (PORTER_REAL_TREES): trees whose own grouped-query attention projects q and (k, v)
apart under GQA (deep-spin 4e33e780, OpenLLM-France a106b248: `query` and `key_value` instead of
`query_key_value` when there are fewer key/value heads than query heads). Gemma-2 (GQA) ports,
both classes verify against HF (its weights go to the two projections), and revert gives the
tree back byte for byte. Before porter read that layout, the port applied and verify failed
(max |logit - HF| ~ 4: the attention's weights were left at their random initialisation).
Gemma-3 on OpenLLM-France (a rotary class that saves its frequencies, the key norm after the
tree's repeat of the keys) verifies too."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec, profile_of
from porter.cli import app
from porter.source import SourceTree
from porter.verify.parity import verify
from tests.helpers.trees import diff_snapshots, snapshot
from tests.realtrees.trees import NEEDS_TREES, copy_of
from tests.variants.conftest import passed

pytestmark = NEEDS_TREES


@pytest.mark.parametrize("label, family", [("dspin-head", "gemma2"), ("ollf-head", "gemma2"), ("ollf-head", "gemma3")])
def test_a_gqa_family_ports_and_verifies_on_a_tree_with_apart_gqa_projections(label, family, tmp_path):
    tree = copy_of(label, tmp_path / label)
    before = snapshot(tree)
    apart = profile_of(SourceTree.open(tree)).facts["num_query_groups"].apart
    assert (apart.query, apart.key_value, apart.found) == ("query", "key_value", "")
    runner = CliRunner()
    applied = runner.invoke(app, ["apply", family, "--target", str(tree)])
    assert applied.exit_code == 0, applied.output
    spec = load_spec(family)
    passed(verify(spec, tree, tmp_path / "verify"), [spec.model_class, f"{spec.model_class}Pipe"])
    reverted = runner.invoke(app, ["revert", "--target", str(tree)])
    assert reverted.exit_code == 0, reverted.output
    assert not diff_snapshots(before, snapshot(tree))
