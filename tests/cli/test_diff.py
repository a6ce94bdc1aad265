"""porter diff: the patch, its statistics, --json, --output for git, colours and exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from porter.patch import file_stat
from porter.port import prepare
from tests.cli.conftest import snapshot
from tests.conftest import copy_sample_tree

GENERATED = Path(__file__).resolve().parents[2] / "generated"
git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def test_a_tree_without_the_port_gets_the_plain_patch_and_status_1(porter, pristine):
    before = snapshot(pristine)
    result = porter("diff", "llama", "--target", pristine)
    assert result.exit_code == 1
    assert result.stdout == (GENERATED / "llama.patch").read_text()  # piped: plain, no colour codes
    assert "\x1b[" not in result.stdout
    assert snapshot(pristine) == before  # diff writes nothing


def test_a_ported_tree_gets_nothing_and_status_0(porter, ported):
    result = porter("diff", "llama", "--target", ported)
    assert (result.exit_code, result.stdout) == (0, "")
    stat = porter("diff", "llama", "--target", ported, "--stat")
    assert stat.exit_code == 0
    assert "nothing to do" in stat.stdout


def test_an_error_is_status_2_with_the_fix_and_no_traceback(porter, tmp_path):
    result = porter("diff", "llama", "--target", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "porter: error: target" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(porter, tmp_path):
    from porter.errors import PorterError

    result = porter("diff", "llama", "--target", tmp_path / "nowhere", "--debug")
    assert isinstance(result.exception, PorterError)


def test_a_usage_error_is_status_2_too(porter):
    assert porter("diff", "llama", "--no-such-option").exit_code == 2
    assert porter("diff").exit_code == 2


def test_unknown_model_is_status_2_and_names_the_known_ones(porter, pristine):
    result = porter("diff", "falcon", "--target", pristine)
    assert result.exit_code == 2
    assert "unknown model 'falcon'" in result.stderr and "llama" in result.stderr


def _patch_counts(patch: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    current = None
    for line in patch.splitlines():
        if line.startswith("diff --git a/"):
            current = line.split(" b/", 1)[1]
            counts[current] = [0, 0]
        elif line.startswith("+") and not line.startswith("+++ "):
            counts[current][0] += 1
        elif line.startswith("-") and not line.startswith("--- "):
            counts[current][1] += 1
    return {k: (a, r) for k, (a, r) in counts.items()}


def test_stat_counts_the_lines_of_the_patch_per_file_and_per_spec_key(porter, pristine):
    result = porter("diff", "llama", "--target", pristine, "--stat")
    assert result.exit_code == 1
    counts = _patch_counts((GENERATED / "llama.patch").read_text())
    rows = re.findall(r"^ (\S+)(?: \(new\))?\s+\+(\d+)\s+-(\d+)$", result.stdout, flags=re.M)
    for path, (added, removed) in counts.items():
        assert re.search(rf"^ {re.escape(path)}(?: \(new\))?\s+\+{added}\s+-{removed}$", result.stdout, flags=re.M), path
    assert len(rows) == len(counts)
    total_added = sum(a for a, _ in counts.values())
    total_removed = sum(r for _, r in counts.values())
    new = (GENERATED / "llama.patch").read_text().count("\nnew file mode ")
    assert f"{len(counts)} files changed ({new} new), +{total_added} -{total_removed}" in result.stdout
    features = re.findall(r"^  (\w+):\s+(\d+) files?, \+(\d+) -(\d+)", result.stdout, flags=re.M)
    assert sum(int(a) for _, _, a, _ in features) == total_added
    assert sum(int(r) for _, _, _, r in features) == total_removed
    by_key = {name: (int(files), int(a)) for name, files, a, _ in features}
    # rmsnorm: its module, the export, the import in transformer, gpt_model and the optimizer, the switch
    assert by_key["rmsnorm"][0] == 6
    assert by_key["model"][1] == sum(a for p, (a, _) in counts.items() if "llama" in p) + 1  # + the export line


@pytest.mark.parametrize("model, file", [("llama", "sentencepiece_tokenizer.py"), ("llama3", "tokenizer_json.py")])
def test_the_tokenizer_key_is_named_for_the_tokenizer_whatever_its_kind(porter, pristine, model, file):
    """--stat's key for the tokenizer is `tokenizer` for a SentencePiece model and for an HF
    tokenizer.json alike (it said `sentencepiece` for both), as the generated file's header."""
    result = porter("diff", model, "--target", pristine, "--stat")
    assert result.exit_code == 1
    keys = [line.split(":")[0].strip() for line in result.stdout.split("by spec key")[1].splitlines()[1:]]
    assert "tokenizer" in keys and "sentencepiece" not in keys
    assert f"megatron/tokenizer/{file} (new)" in result.stdout
    header = (GENERATED / model / "megatron/tokenizer" / file).read_text().splitlines()[0]
    assert "for the tokenizer difference" in header


def test_every_added_line_of_the_port_belongs_to_a_spec_key(pristine):
    port = prepare("llama", pristine)
    for change in port.changes:
        assert "(other)" not in file_stat(change).by_feature, change.path


def test_json_is_the_stat_as_a_documented_document(porter, pristine):
    result = porter("diff", "llama", "--target", pristine, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["schema"] == "porter.diff/1" and doc["model"] == "llama" and doc["changes"] is True
    assert set(doc) == {"schema", "porter", "model", "spec", "target", "changes", "files", "features",
                        "converts_only", "reused_only", "total"}
    assert doc["converts_only"] == []  # LLaMA's HF weights are the tree's parts: every key writes lines
    assert doc["reused_only"] == []  # the sample tree has none of LLaMA's switches
    counts = _patch_counts((GENERATED / "llama.patch").read_text())
    assert {f["path"]: (f["added"], f["removed"]) for f in doc["files"]} == counts
    created = (GENERATED / "llama.patch").read_text().count("\nnew file mode ")
    assert doc["total"] == {"files": len(counts), "created": created, "added": sum(a for a, _ in counts.values()),
                            "removed": sum(r for _, r in counts.values())}
    for f in doc["files"]:
        assert sum(v["added"] for v in f["features"].values()) == f["added"]
        assert sum(v["removed"] for v in f["features"].values()) == f["removed"]
    rms = next(f for f in doc["features"] if f["feature"] == "rmsnorm")
    assert rms["spec_field"] == "norm.type" and "megatron/model/rmsnorm.py" in rms["files"]


def test_a_key_that_writes_no_line_is_named_with_what_it_reuses(porter, ported):
    """A second family on a ported tree: the switches it takes from the first port write no line,
    and the stat names them all the same, with what they reuse."""
    result = porter("diff", "llama3", "--target", ported, "--json")
    doc = json.loads(result.stdout)
    reused = {r["feature"]: r for r in doc["reused_only"]}
    assert reused["rmsnorm"]["what"] == "reuses --layernorm-type, added by porter earlier"
    assert reused["rmsnorm"]["spec_field"] == "norm.type"
    assert not set(reused) & {f["feature"] for f in doc["features"]}  # (the text: README's --stat transcript)


def test_json_on_a_ported_tree_and_on_an_error(porter, ported, tmp_path):
    ok = porter("diff", "llama", "--target", ported, "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["changes"] is False
    bad = porter("diff", "llama", "--target", tmp_path / "nowhere", "--json")
    assert bad.exit_code == 2
    error = json.loads(bad.stdout)
    assert error["schema"] == "porter.error/1" and error["error"]["fix"]


def test_quiet_prints_nothing_and_answers_by_status(porter, pristine, ported):
    for tree, status in ((pristine, 1), (ported, 0)):
        result = porter("diff", "llama", "-t", tree, "-q")
        assert (result.exit_code, result.output) == (status, "")


def test_on_a_terminal_the_patch_is_coloured_and_each_hunk_names_its_edit(porter, pristine):
    result = porter("diff", "llama", "--target", pristine, "--color", "always")
    assert result.exit_code == 1
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert "\x1b[32m+" in result.stdout and "\x1b[31m-" in result.stdout
    assert re.search(r"^@@ -\d+,\d+ \+\d+,\d+ @@  .*rmsnorm: ChooseNormClass", plain, flags=re.M)
    assert porter("diff", "llama", "--target", pristine, "--color", "never").stdout == (GENERATED / "llama.patch").read_text()


def _git_apply(patch: Path, tree: Path) -> None:
    subprocess.run(["git", "apply", "--check", str(patch)], cwd=tree, check=True, capture_output=True)
    subprocess.run(["git", "apply", str(patch)], cwd=tree, check=True, capture_output=True)


def _crlf(tree: Path, path: str) -> None:
    file = tree / path
    file.write_bytes(file.read_bytes().replace(b"\n", b"\r\n"))


def _no_final_newline(tree: Path, path: str) -> None:
    file = tree / path
    file.write_bytes(file.read_bytes().rstrip(b"\n"))


def _bom(tree: Path, path: str) -> None:
    file = tree / path
    file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())


VARIANTS = {
    "as-shipped": [],
    "crlf": [(_crlf, "megatron/model/transformer.py"), (_crlf, "megatron/arguments.py")],
    "no-final-newline": [(_no_final_newline, "megatron/model/gpt_model.py"), (_no_final_newline, "megatron/global_vars.py")],
    "bom": [(_bom, "megatron/model/language_model.py")],
}


@git
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_output_patch_applied_by_git_gives_the_tree_porter_apply_writes(porter, tmp_path, variant):
    with_porter = copy_sample_tree(tmp_path / "a")
    with_git = copy_sample_tree(tmp_path / "b")
    for tree in (with_porter, with_git):
        for change, path in VARIANTS[variant]:
            change(tree, path)
    pristine = snapshot(with_porter)
    patch = tmp_path / "x.patch"
    result = porter("diff", "llama", "--target", with_porter, "--output", patch)
    files = len(_patch_counts((GENERATED / "llama.patch").read_text()))
    assert result.exit_code == 1 and result.stdout.startswith(f"wrote {patch}: {files} files")
    assert snapshot(with_porter) == pristine
    _git_apply(patch, with_git)
    assert porter("apply", "llama", "--target", with_porter).exit_code == 0
    expected, got = snapshot(with_porter), snapshot(with_git)
    assert sorted(got) == sorted(expected)  # the same files, the new ones included
    assert [p for p in expected if expected[p] != got[p]] == []  # byte for byte
    assert len(expected) == len(pristine) + (GENERATED / "llama.patch").read_text().count("\nnew file mode ")


@git
def test_in_a_subfolder_of_a_git_repository_porter_says_how_to_apply(porter, tmp_path):
    repo = tmp_path / "repo"
    tree = copy_sample_tree(repo / "PyTorch" / "Megatron-DeepSpeed")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    patch = tmp_path / "x.patch"
    result = porter("diff", "llama", "--target", tree, "--output", patch)
    note = next(line for line in result.stdout.splitlines() if line.startswith("note:"))
    command = note.split("apply the patch from there: ", 1)[1]
    assert command == f"git -C {repo.resolve()} apply --directory=PyTorch/Megatron-DeepSpeed {patch.resolve()}"
    subprocess.run(command.split(), check=True, capture_output=True)
    assert (tree / "pretrain_llama.py").is_file()
    assert porter("diff", "llama", "--target", tree).exit_code == 0


def test_output_on_a_ported_tree_writes_an_empty_patch(porter, ported, tmp_path):
    patch = tmp_path / "none.patch"
    result = porter("diff", "llama", "--target", ported, "--output", patch)
    assert result.exit_code == 0 and patch.read_bytes() == b""
    assert "nothing to do" in result.stdout


def test_output_to_an_unwritable_place_is_status_2(porter, pristine, tmp_path):
    result = porter("diff", "llama", "--target", pristine, "--output", tmp_path / "no" / "such" / "x.patch")
    assert result.exit_code == 2 and "cannot write" in result.stderr
