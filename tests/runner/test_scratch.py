"""porter.treerun.scratch: the copy a run writes into instead of the user's tree."""

from __future__ import annotations

import os

import pytest

from porter.treerun.scratch import LINK_ABOVE, in_tree_terms, scratch_copy


def test_the_copy_has_the_sources_with_their_times_and_leaves_out_git_caches_and_journal(tmp_path):
    tree = tmp_path / "tree"
    (tree / "megatron" / "data").mkdir(parents=True)
    (tree / "megatron" / "data" / "Makefile").write_text("default:\n\tc++ helpers.cpp\n")
    (tree / "megatron" / "data" / "helpers.cpp").write_text("int main() {}\n")
    os.utime(tree / "megatron" / "data" / "helpers.cpp", (1_000_000_000, 1_000_000_000))
    for left_out in (".git", ".porter", "megatron/__pycache__"):
        (tree / left_out).mkdir(parents=True)
        (tree / left_out / "x").write_text("x")
    big = tree / "data" / "corpus.bin"
    big.parent.mkdir()
    big.write_bytes(b"\0" * (LINK_ABOVE + 1))

    copy = scratch_copy(tree, tmp_path / "work" / "tree")
    assert (copy / "megatron" / "data" / "Makefile").read_text() == "default:\n\tc++ helpers.cpp\n"
    assert (copy / "megatron" / "data" / "helpers.cpp").stat().st_mtime == 1_000_000_000  # make sees no change
    assert not any((copy / p).exists() for p in (".git", ".porter", "megatron/__pycache__"))
    assert (copy / "data" / "corpus.bin").is_symlink() and (copy / "data" / "corpus.bin").resolve() == big

    (copy / "megatron" / "data" / "helpers.so").write_bytes(b"built")  # a run builds in the copy only
    assert not (tree / "megatron" / "data" / "helpers.so").exists()
    again = scratch_copy(tree, copy)  # replaced, not merged
    assert not (again / "megatron" / "data" / "helpers.so").exists()


def test_the_copy_must_lie_outside_the_tree(tmp_path):
    (tmp_path / "megatron").mkdir()
    with pytest.raises(ValueError, match="outside the tree"):
        scratch_copy(tmp_path, tmp_path / "scratch")


def test_messages_name_the_users_tree(tmp_path):
    copy, tree = tmp_path / "w" / "tree", tmp_path / "Megatron-DeepSpeed"
    text = f'File "{copy}/megatron/model/x.py", line 3'
    assert in_tree_terms(text, copy, tree) == f'File "{tree}/megatron/model/x.py", line 3'
