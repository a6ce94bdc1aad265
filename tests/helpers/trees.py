"""Copies of the sample tree, edited copies of a tree, and snapshots of every file in a folder, for
before/after checks."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from porter.resources import sample_tree_dir


def copy_sample(dest: Path) -> Path:
    shutil.copytree(sample_tree_dir(), dest, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dest


def edited_copy(src: Path, dest: Path, *edits: tuple[str, str, str]) -> Path:
    """A copy of the tree src at dest (without __pycache__) with each (file, old, new) edit made in
    turn: old must stand in file exactly once when its edit is made, else the copy fails, naming both."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for file, old, new in edits:
        path = dest / file
        text = path.read_text()
        found = text.count(old)
        assert found == 1, f"{file}: {old!r} should stand there exactly once, found {found} times"
        path.write_text(text.replace(old, new))
    return dest


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: files by SHA-256 and mode, folders by mode, links by target."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as exc:
                    digest = f"unreadable: {exc.strerror}"
                out[rel] = ("file", digest, stat.S_IMODE(info.st_mode))
    return out


def diff_snapshots(before: dict, after: dict) -> list[str]:
    return [f"{rel}: {before.get(rel)} -> {after.get(rel)}"
            for rel in sorted(set(before) | set(after)) if before.get(rel) != after.get(rel)]
