"""porter inspect: the profile and the plan with reasons; refusals still show the profile."""

import json
import shutil

from typer.testing import CliRunner

from porter.cli import app
from porter.resources import sample_tree_dir


def test_inspect_prints_every_change_with_its_reason():
    result = CliRunner().invoke(app, ["inspect", "llama", "--target", str(sample_tree_dir())])
    assert result.exit_code == 0, result.output
    assert "adds --no-bias: no no_bias switch found" in result.output
    assert "checks in parse_args" in result.output
    assert "query/key in ParallelAttention.forward" in result.output


def test_inspect_json_has_a_stable_schema_and_matches_the_plan():
    result = CliRunner().invoke(app, ["inspect", "llama", "--target", str(sample_tree_dir()), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["schema"] == "porter.inspect/1" and data["error"] is None
    assert set(data) >= {"target", "spec", "profile", "plan"}
    assert data["profile"]["switches"]["rotary"] is None
    assert data["profile"]["model"]["linears_return_bias"] is True
    edits = data["plan"]["edits"]
    assert all(set(e) == {"file", "feature", "kind", "name", "reason"} for e in edits)
    assert {"file": "megatron/model/rmsnorm.py", "feature": "rmsnorm", "kind": "create",
            "name": "template rmsnorm.py.j2", "reason": "RMSNorm"} in edits
    assert data["plan"]["defaults"]["layernorm_type"] == "rmsnorm"


def test_inspect_of_a_tree_porter_refuses_shows_the_profile_and_why(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    arguments = tree / "megatron" / "arguments.py"
    text = arguments.read_text()
    anchor = "    group.add_argument('--num-experts'"
    assert anchor in text
    arguments.write_text(text.replace(anchor, "    group.add_argument('--rope-base', type=float, dest='rope_theta')\n" + anchor, 1))
    result = CliRunner().invoke(app, ["inspect", "llama", "--target", str(tree)])
    assert result.exit_code == 2
    assert "Profile" in result.output and "porter refuses this tree" in result.output
    assert "--rope-base" in result.output
