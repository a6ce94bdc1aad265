"""A port damaged or edited after `porter apply`: apply, diff and inspect say which file and
how; apply re-creates porter's deleted files; every refusal's fix, run as printed, works."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from porter.port import apply
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot

RMSNORM = "megatron/model/rmsnorm.py"
# the lines porter writes into it (generated/ holds porter's output on the sample tree)
ENTRY_LINES = len((Path(__file__).resolve().parents[2] / "generated" / "llama" / "pretrain_llama.py").read_text().splitlines())
RMSNORM_LINES = len((Path(__file__).resolve().parents[2] / "generated" / "llama" / RMSNORM).read_text().splitlines())
JOURNAL = ".porter/journal.json"


def _without_journal(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if not k.startswith(".porter")}


def _fix(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("  fix:")]
    return line.split(":", 1)[1].strip()


def _run_fix(cli, fix: str, cwd: Path) -> None:
    """Run the commands the fix quotes (`...`) but the last apply, as printed, where the user stands."""
    for quoted in re.findall(r"`([^`]+)`", fix):
        for command in quoted.split(" && "):
            if command.startswith("porter apply") and quoted.endswith(command) and "revert" not in quoted:
                continue  # the caller runs it and checks what it prints
            if command.startswith("porter "):
                result = cli(*shlex.split(command)[1:])
                assert result.exit_code == 0, (command, result.output)
            else:
                subprocess.run(command, shell=True, cwd=cwd, check=True)


def test_a_deleted_generated_file_is_seen_and_re_created(tree, cli, tmp_path):
    fresh = copy_sample(tmp_path / "fresh")
    apply("llama", fresh)
    pristine = snapshot(tree)
    apply("llama", tree)
    (tree / RMSNORM).unlink()

    diff = cli("diff", "llama", "--target", tree, "--stat")
    assert diff.exit_code == 1  # changes to make: the file, again
    assert f" {RMSNORM} (new)  +{RMSNORM_LINES}" in diff.stdout
    assert f"porter: note: {RMSNORM} was deleted since porter created it: apply re-creates it" in diff.stderr
    inspect = cli("inspect", "llama", "--target", tree)
    assert inspect.exit_code == 0
    assert f"    {RMSNORM}: deleted since porter created it: apply re-creates it" in inspect.output

    applied = cli("apply", "llama", "--target", tree)
    assert applied.exit_code == 0
    assert applied.output == f"re-created {RMSNORM} (+{RMSNORM_LINES} -0): deleted since porter created it\n"
    assert not diff_snapshots(_without_journal(snapshot(fresh)), _without_journal(snapshot(tree)))
    second = json.loads((tree / JOURNAL).read_text())["applies"][1]
    assert [(f["path"], f.get("repaired"), bool(f["edits"])) for f in second["files"]] == [(RMSNORM, True, True)]

    assert cli("diff", "llama", "--target", tree, "--quiet").exit_code == 0
    explained = cli("explain", f"{tree}/{RMSNORM}:1")
    assert explained.exit_code == 0 and "template: rmsnorm.py.j2" in explained.output
    assert cli("revert", "--target", tree).exit_code == 0
    assert not diff_snapshots(pristine, snapshot(tree))


def test_an_edited_generated_file_is_refused_and_the_fix_works(tree, cli, tmp_path, monkeypatch):
    fresh = copy_sample(tmp_path / "fresh")
    apply("llama", fresh)
    pristine = snapshot(tree)
    apply("llama", tree)
    with open(tree / "pretrain_llama.py", "a") as handle:
        handle.write("# tuned by me\n")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tree)
    for command in (("apply", "llama"), ("diff", "llama"), ("inspect", "llama")):
        refused = cli(*command, "--target", "tree")
        assert refused.exit_code == 2, refused.output
        assert "pretrain_llama.py: edited since porter created it (+1 -0 lines)" in refused.output
    assert not diff_snapshots(before, snapshot(tree))

    fix = _fix(cli("apply", "llama", "--target", "tree").output)
    assert fix.startswith("move porter's edited files aside: `mv tree/pretrain_llama.py tree/pretrain_llama.py.mine`;")
    _run_fix(cli, fix, tmp_path)
    applied = cli("apply", "llama", "--target", "tree")
    assert applied.exit_code == 0
    assert applied.output == f"re-created pretrain_llama.py (+{ENTRY_LINES} -0): deleted since porter created it\n"
    assert (tree / "pretrain_llama.py.mine").read_text().endswith("# tuned by me\n")
    ported = _without_journal(snapshot(tree))
    assert ported.pop("pretrain_llama.py.mine")
    assert not diff_snapshots(_without_journal(snapshot(fresh)), ported)
    assert cli("revert", "--target", "tree").exit_code == 0
    after = snapshot(tree)
    assert after.pop("pretrain_llama.py.mine")
    assert not diff_snapshots(pristine, after)


def test_revert_keep_edits_of_an_edited_generated_file_says_a_way_that_works(tree, cli, tmp_path, monkeypatch):
    pristine = snapshot(tree)
    apply("llama", tree)
    with open(tree / "pretrain_llama.py", "a") as handle:
        handle.write("# tuned by me\n")
    monkeypatch.chdir(tmp_path)
    refused = cli("revert", "--target", "tree", "--keep-edits")
    assert refused.exit_code == 2 and "pretrain_llama.py was edited since porter created it" in refused.output
    fix = _fix(refused.output)
    assert "`mv tree/pretrain_llama.py tree/pretrain_llama.py.mine && porter revert --target tree --keep-edits`" in fix
    _run_fix(cli, fix, tmp_path)
    after = snapshot(tree)
    assert after.pop("pretrain_llama.py.mine")
    assert not diff_snapshots(pristine, after)


def test_a_deleted_tree_file_is_refused_and_the_fixes_work(tree, cli, tmp_path, monkeypatch):
    """The tree's own file is not porter's to re-create: git restores it, then revert and apply."""
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "gpt"]):
        subprocess.run(["git", *args], cwd=tree, check=True)
    fresh = copy_sample(tmp_path / "fresh")
    apply("llama", fresh)
    apply("llama", tree)
    (tree / "megatron/global_vars.py").unlink()
    monkeypatch.chdir(tmp_path)
    refused = cli("apply", "llama", "--target", "tree")
    assert refused.exit_code == 2
    assert "megatron/global_vars.py: deleted since porter changed it" in refused.output
    fix = _fix(refused.output)
    assert "`git -C tree checkout -- megatron/global_vars.py`" in fix
    _run_fix(cli, fix, tmp_path)  # back as committed: as before the port
    again = cli("apply", "llama", "--target", "tree")
    assert again.exit_code == 2 and "megatron/global_vars.py was edited since porter changed it" in again.output
    _run_fix(cli, _fix(again.output), tmp_path)  # revert --keep-edits, apply
    assert not diff_snapshots(_without_journal(snapshot(fresh)),
                              {k: v for k, v in _without_journal(snapshot(tree)).items() if not k.startswith(".git")})


def test_edits_to_the_trees_files_are_kept_and_said(tree, cli):
    apply("llama", tree)
    with open(tree / "megatron/arguments.py", "a") as handle:
        handle.write("# ours\n")
    applied = cli("apply", "llama", "--target", tree)
    assert applied.exit_code == 0
    assert applied.output.splitlines() == [
        f"nothing to do: {tree} already has the llama port",
        "kept your edits of megatron/arguments.py: edited since porter changed it (+1 -0 lines)",
    ]
    diff = cli("diff", "llama", "--target", tree)
    assert diff.exit_code == 0 and diff.stdout == ""
    assert diff.stderr == ("porter: note: megatron/arguments.py was edited since porter changed it (+1 -0 lines): "
                           "your edits, kept; porter refuses only when the port would change something\n")
    inspect = cli("inspect", "llama", "--target", tree, "--json")
    assert inspect.exit_code == 0
    assert json.loads(inspect.stdout)["port"]["not_as_porter_left_them"] == [{
        "path": "megatron/arguments.py", "created": False, "state": "edited",
        "what": "edited since porter changed it (+1 -0 lines)",
        "action": "your edits, kept; porter refuses only when the port would change something",
    }]
