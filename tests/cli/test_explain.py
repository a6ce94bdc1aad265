"""porter explain: which spec key, rewrite or template wrote a line, from the journal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import copy_sample_tree

TRANSFORMER = "megatron/model/transformer.py"


def line_of(tree: Path, path: str, text: str) -> int:
    """The 1-based number of the first line of path containing text."""
    for number, line in enumerate((tree / path).read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


@pytest.fixture
def edited(ported, tmp_path) -> Path:
    """A ported tree that someone edited afterwards."""
    tree = tmp_path / "edited"
    shutil.copytree(ported, tree)
    return tree


def test_a_rewritten_line_names_its_spec_key_rewrite_and_reason(porter, ported):
    number = line_of(ported, TRANSFORMER, "norm_class = RMSNorm if")
    result = porter("explain", f"{ported}/{TRANSFORMER}:{number}")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"{TRANSFORMER}:{number}: norm_class = RMSNorm if")
    assert "written by porter: apply 1 of llama\n" in out
    assert "spec key: rmsnorm  (norm.type = 'rmsnorm'; GPT: 'layernorm')" in out
    assert "rewrite: ChooseNormClass  (porter/differences/rmsnorm/rewrites.py)" in out
    assert "why: ParallelTransformerLayer's norm sites follow the norm switch" in out


def test_a_created_file_line_names_its_template(porter, ported):
    result = porter("explain", "megatron/model/rmsnorm.py:1", "--target", ported)
    assert result.exit_code == 0
    assert "template: rmsnorm.py.j2  (porter/differences/rmsnorm/rmsnorm.py.j2)" in result.stdout
    assert "spec key: rmsnorm" in result.stdout and "why: RMSNorm" in result.stdout


def test_a_line_porter_kept_is_the_trees_own(porter, ported):
    result = porter("explain", f"{TRANSFORMER}:1", "--target", ported)
    assert result.exit_code == 0
    assert "not porter's: it was in the tree before the port" in result.stdout


def test_a_line_that_moved_since_keeps_its_origin(porter, edited):
    number = line_of(edited, TRANSFORMER, "norm_class = RMSNorm if")
    path = edited / TRANSFORMER
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + ["# a note of ours\n", "# and another\n"] + lines[3:]))
    result = porter("explain", f"{TRANSFORMER}:{number + 2}", "--target", edited)
    assert result.exit_code == 0
    assert f"written by porter: apply 1 of llama, at line {number} (the file changed since)" in result.stdout
    assert "ChooseNormClass" in result.stdout
    ours = porter("explain", f"{TRANSFORMER}:4", "--target", edited)
    assert "not porter's: added or changed after porter wrote this file" in ours.stdout


def test_a_line_edited_after_the_port_is_not_porters(porter, edited):
    number = line_of(edited, TRANSFORMER, "norm_class = RMSNorm if")
    path = edited / TRANSFORMER
    text = path.read_text()
    path.write_text(text.replace("norm_class = RMSNorm if", "norm_class = RMSNorm  # ours; was: if", 1))
    result = porter("explain", f"{TRANSFORMER}:{number}", "--target", edited)
    assert result.exit_code == 0
    assert "not porter's: added or changed after porter wrote this file (apply 1 of llama)" in result.stdout
    assert "porter had written lines here for: rmsnorm: ChooseNormClass" in result.stdout


def test_a_whole_file_lists_the_runs_porter_wrote(porter, ported):
    journal = json.loads((ported / ".porter" / "journal.json").read_text())
    record = next(f for f in journal["applies"][0]["files"] if f["path"] == "megatron/model/gpt_model.py")
    tagged = [n for n, tag in enumerate(record["provenance"], 1) if tag]
    result = porter("explain", "megatron/model/gpt_model.py", "--target", ported)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"megatron/model/gpt_model.py: porter wrote {len(tagged)} of ")
    for number in tagged:
        assert f"  {number}  rmsnorm: " in result.stdout


def test_a_range_shows_every_line(porter, ported):
    number = line_of(ported, TRANSFORMER, "norm_class = RMSNorm if")
    result = porter("explain", f"{TRANSFORMER}:{number - 2}-{number + 2}", "--target", ported)
    assert result.exit_code == 0
    assert "rmsnorm: ChooseNormClass" in result.stdout and "(the tree's own)" in result.stdout


def test_json_has_one_object_per_line(porter, ported):
    number = line_of(ported, "megatron/model/gpt_model.py", "RMSNorm")
    result = porter("explain", f"megatron/model/gpt_model.py:{number}", "--target", ported, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["schema"] == "porter.explain/1" and doc["path"] == "megatron/model/gpt_model.py"
    (line,) = doc["lines"]
    assert line["origin"] == "porter" and line["feature"] == "rmsnorm" and line["spec_field"] == "norm.type"
    assert line["edit"] == {"kind": "rewrite", "name": "ImportNameAlongside", "source": "porter/edits/imports.py"}
    assert line["reasons"] == ["imports RMSNorm beside LayerNorm"] and line["written_line"] == number


def test_lines_of_an_earlier_apply_are_traced_through_a_later_one(porter, pristine, tmp_path):
    spec = tmp_path / "gpt_rms.toml"
    spec.write_text('[model]\nname = "gpt_rms"\nclass_prefix = "GPTRms"\n\n[norm]\ntype = "rmsnorm"\n')
    assert porter("apply", spec, "--target", pristine).exit_code == 0
    assert porter("apply", "llama", "--target", pristine).exit_code == 0
    rms = line_of(pristine, "megatron/model/gpt_model.py", "RMSNorm if")
    first = porter("explain", f"megatron/model/gpt_model.py:{rms}", "--target", pristine)
    assert "written by porter: apply 1 of gpt_rms" in first.stdout
    swiglu = line_of(pristine, TRANSFORMER, "from megatron.model.swiglu import geglu, swiglu")
    second = porter("explain", f"{TRANSFORMER}:{swiglu}", "--target", pristine)
    assert "written by porter: apply 2 of llama" in second.stdout and "swiglu" in second.stdout


@pytest.mark.parametrize(
    "where, message",
    [
        (f"{TRANSFORMER}:99999", "no line 99999"),
        ("megatron/nope.py:3", "no such file"),
    ],
)
def test_bad_locations_are_status_2(porter, ported, where, message):
    result = porter("explain", where, "--target", ported)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_a_tree_that_was_not_ported_is_status_2(porter, pristine, tmp_path):
    result = porter("explain", f"{pristine}/{TRANSFORMER}:3")
    assert result.exit_code == 2 and "no ported tree above" in result.stderr
    result = porter("explain", f"{TRANSFORMER}:3", "--target", pristine)
    assert result.exit_code == 2 and "has no porter journal" in result.stderr


def test_a_file_outside_the_tree_is_status_2(porter, ported, tmp_path):
    other = copy_sample_tree(tmp_path / "other")
    result = porter("explain", f"{other}/{TRANSFORMER}:3", "--target", ported)
    assert result.exit_code == 2 and "outside the tree" in result.stderr
