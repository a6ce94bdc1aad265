"""porter list and porter apply."""

from __future__ import annotations

import json

from porter.catalog import load_spec
from tests.cli.conftest import snapshot
from tests.cli.test_diff import GENERATED, _patch_counts


def test_list_shows_each_spec_with_its_differences_from_gpt(porter):
    result = porter("list")
    assert result.exit_code == 0
    llama = load_spec("llama")
    assert "llama  (model_diffs/llama.toml): LLaMAModel, pretrain_llama.py" in result.stdout
    for name, value in llama.summary().items():
        assert f"{name}" in result.stdout and value in result.stdout
    assert "gpt  (model_diffs/gpt.toml)" in result.stdout and "no differences from GPT" in result.stdout
    assert "training defaults: init_method_std=0.02" in result.stdout


def test_list_json(porter):
    doc = json.loads(porter("list", "--json").stdout)
    assert doc["schema"] == "porter.list/1"
    llama = next(s for s in doc["specs"] if s["name"] == "llama")
    assert {"field": "norm.type", "value": "rmsnorm", "gpt": "layernorm"} in llama["differences"]
    assert llama["class"] == "LLaMAModel" and llama["training_defaults"]["clip_grad"] == 1.0
    assert next(s for s in doc["specs"] if s["name"] == "gpt")["differences"] == []


def test_list_checks_a_spec_file_of_yours(porter, tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('[model]\nname = "mine"\nclass_prefix = "Mine"\n\n[linear]\nbias = false\n')
    result = porter("list", good)
    assert result.exit_code == 0
    assert result.stdout.startswith("mine  (mine.toml): MineModel, pretrain_mine.py")
    assert "linear.bias  False (GPT: True)" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "bad"\nclass_prefix = "Bad"\n\n[norm]\neps = 2.0\n')
    result = porter("list", bad)
    assert result.exit_code == 2 and "invalid spec field norm.eps" in result.stderr and "Traceback" not in result.output
    assert porter("list", tmp_path / "missing.toml").exit_code == 2


def test_apply_writes_reports_and_is_idempotent(porter, pristine):
    result = porter("apply", "llama", "--target", pristine)
    assert result.exit_code == 0
    assert f"created pretrain_llama.py (+{_patch_counts((GENERATED / 'llama.patch').read_text())['pretrain_llama.py'][0]} -0)" in result.stdout
    assert "changed megatron/arguments.py (+" in result.stdout
    assert (pristine / ".porter" / "journal.json").is_file()
    again = porter("apply", "llama", "--target", pristine)
    assert again.exit_code == 0 and again.stdout.startswith("nothing to do:")


def test_apply_json_and_quiet(porter, pristine, tmp_path):
    counts = _patch_counts((GENERATED / "llama.patch").read_text())
    doc = json.loads(porter("apply", "llama", "--target", pristine, "--json").stdout)
    assert doc["schema"] == "porter.apply/1" and doc["written"] is True and len(doc["files"]) == len(counts)
    added = counts["pretrain_llama.py"][0]
    assert {"path": "pretrain_llama.py", "created": True, "added": added, "removed": 0, "repaired": False} in doc["files"]
    doc = json.loads(porter("apply", "llama", "--target", pristine, "--json").stdout)
    assert doc["written"] is False and doc["files"] == []
    assert porter("apply", "llama", "--target", pristine, "-q").output == ""


def test_apply_error_is_status_2_and_writes_nothing(porter, pristine):
    (pristine / "megatron" / "model" / "transformer.py").write_text("def broken(:\n")
    before = snapshot(pristine)
    result = porter("apply", "llama", "--target", pristine)
    assert result.exit_code == 2 and "porter: error: cannot parse" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(pristine) == before and not (pristine / ".porter").exists()
