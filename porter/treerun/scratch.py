"""The scratch copy of a tree that `porter smoke` and `porter verify` run in.

A run of a tree writes into it: Python's __pycache__/, the dataset helpers that
megatron/data/Makefile builds at the first run (helpers*.so), whatever the tree's code
writes next to itself. The user's tree must stay as it was (so that `porter revert` gives it
back byte for byte), so porter copies it and runs the copy: sources and build files are
copied (times kept, so that make sees prebuilt helpers as up to date), big files (data,
checkpoints kept in the tree) are linked rather than copied, and .git, __pycache__ and
porter's journal are left out.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LINK_ABOVE = 4 * 1024 * 1024  # bytes: bigger files are symlinked, not copied
LEFT_OUT = (".git", "__pycache__", ".porter")


def scratch_copy(tree: Path, into: Path) -> Path:
    """Copy the tree to `into` (replacing what is there) and return `into`."""
    tree, into = Path(tree).resolve(), Path(into).resolve()
    if into == tree or tree in into.parents:
        raise ValueError(f"the scratch copy {into} must lie outside the tree {tree}")
    if into.exists():
        shutil.rmtree(into)

    def copy(source: str, target: str) -> None:
        if os.path.getsize(source) > LINK_ABOVE:
            os.symlink(source, target)
        else:
            shutil.copy2(source, target)

    shutil.copytree(tree, into, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT), copy_function=copy)
    return into


def in_tree_terms(text: str, copy: Path, tree: Path) -> str:
    """`text` (a log, a traceback) with the copy's paths written as the tree's own."""
    return text.replace(str(Path(copy).resolve()), str(Path(tree).resolve()))
