"""A read-only tree is refused once, naming every file and folder porter must write, with one
`chmod` that works from where the user stands; after it, the next run writes."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from porter.port import apply
from tests.helpers.trees import diff_snapshots, snapshot


def _read_only(root: Path) -> None:
    subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)


def _fix_command(output: str) -> str:
    (fix,) = [line for line in output.splitlines() if line.startswith("  fix:")]
    command = fix.split("make them writable: ", 1)[1].split(", then run porter again")[0]
    assert command.startswith("chmod u+w "), fix
    return command


def _refused_once_then_written(cli, args, cwd: Path, tree: Path, must_name: set[str]) -> str:
    before = snapshot(tree)
    refused = cli(*args)
    assert refused.exit_code == 2, refused.output
    assert "marked read-only" in refused.output
    assert not diff_snapshots(before, snapshot(tree))
    command = _fix_command(refused.output)
    named = set(shlex.split(command)[2:])
    assert must_name <= named, must_name - named
    assert all(not Path(p).is_absolute() and (cwd / p).exists() for p in named)  # from the cwd, as typed
    subprocess.run(command, shell=True, cwd=cwd, check=True)  # the user runs it, where they stand
    written = cli(*args)
    assert written.exit_code == 0, written.output
    return written.output


def test_a_read_only_tree_is_refused_once_with_every_path(tree, cli, tmp_path, monkeypatch):
    _read_only(tree)
    monkeypatch.chdir(tmp_path)  # the user stands above the tree and names it relatively
    out = _refused_once_then_written(
        cli, ["apply", "llama", "--target", "tree"], tmp_path, tree,
        {"tree", "tree/megatron", "tree/megatron/model", "tree/megatron/model/transformer.py",
         "tree/megatron/tokenizer", "tree/megatron/arguments.py"},
    )
    assert "created pretrain_llama.py" in out


def test_the_command_works_from_inside_the_tree(tree, cli, monkeypatch):
    _read_only(tree / "megatron")
    monkeypatch.chdir(tree / "megatron")
    out = _refused_once_then_written(
        cli, ["apply", "llama", "--target", ".."], tree / "megatron", tree,
        {"../megatron", "../megatron/model", "../megatron/model/transformer.py"},
    )
    assert "changed megatron/model/transformer.py" in out


def test_a_read_only_ported_tree_is_reverted_after_one_refusal(tree, cli, tmp_path, monkeypatch):
    pristine = snapshot(tree)
    apply("llama", tree)
    _read_only(tree)
    monkeypatch.chdir(tmp_path)
    out = _refused_once_then_written(
        cli, ["revert", "--target", "tree"], tmp_path, tree,
        {"tree/.porter", "tree/megatron/model", "tree/megatron/model/transformer.py"},
    )
    assert "removed pretrain_llama.py" in out
    subprocess.run(["chmod", "-R", "u+w", str(tree)], check=True)
    assert not diff_snapshots(
        {k: v for k, v in pristine.items() if v[0] != "dir"},
        {k: v for k, v in snapshot(tree).items() if v[0] != "dir"},
    )


@pytest.mark.parametrize("rel", ["megatron/model/transformer.py", "megatron/model"])
def test_one_path_in_the_way_is_named_alone(tree, cli, tmp_path, monkeypatch, rel):
    (tree / rel).chmod(0o555 if (tree / rel).is_dir() else 0o444)
    monkeypatch.chdir(tmp_path)
    result = cli("apply", "llama", "--target", "tree")
    assert result.exit_code == 2
    assert f"fix:        make it writable (chmod u+w tree/{rel})" in result.output
