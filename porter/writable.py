"""May porter write these paths of a tree? Every refusal at once, with one fix that works.

Before a write (porter.writer) every path it touches is checked: no symbolic link on the way,
no folder where a file goes (or a file where a folder goes), and no file or folder marked
read-only (porter respects the mark even when the operating system would let it through, e.g.
for root). All the paths are checked before porter says anything, so that one run names
everything in the way; read-only marks are answered with one `chmod u+w ...` naming each
file and folder as the user reaches it from where they ran porter (the tree's path as they
gave it, joined with the path inside the tree).
"""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError

NOTHING_WRITTEN = " (nothing was written)"


@dataclass(frozen=True)
class Blocked:
    """Why porter must not or cannot write one path of a change."""

    rel: str  # the file porter must write, relative to the tree
    error: PorterError  # the refusal for this path alone
    read_only: Path | None = None  # the file or folder marked read-only, as the user reaches it


def marked_writable(path: Path) -> bool:
    """Does the file or folder's mode carry a write bit? (root ignores the mark; porter does not)"""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(path, os.W_OK)


def _refuse(rel: str, message: str, construct: str, found: str, fix: str) -> PorterError:
    return PorterError(message, file=rel, construct=construct, found=found, fix=fix + NOTHING_WRITTEN)


def _read_only(root: Path, rel: str, blocker: Path, construct: str) -> Blocked:
    shown = "the tree root" if blocker == root else blocker.relative_to(root).as_posix()
    error = _refuse(
        rel, f"{shown} is marked read-only", construct, f"mode {stat.filemode(blocker.stat().st_mode)}",
        f"make it writable (chmod u+w {shlex.quote(str(blocker))}) if porter may change it",
    )
    return Blocked(rel, error, read_only=blocker)


def blocked(root: Path, rel: str, deleting: bool = False) -> list[Blocked]:
    """Why porter must not or cannot write (or delete) `rel`: every reason, or none.

    A file is replaced through a temporary file beside it, so its folder must be writable as
    well as the file itself."""
    path = root / rel
    parts = Path(rel).parts
    for depth in range(1, len(parts)):  # every folder between the root and the file
        folder = root.joinpath(*parts[:depth])
        shown = "/".join(parts[:depth])
        if folder.is_symlink():
            return [Blocked(rel, _refuse(
                rel, f"{shown} is a symbolic link", "a real folder on the way to " + rel,
                f"a link to {os.readlink(folder)}",
                f"porter does not write through links; replace {shown} with the folder it points to",
            ))]
        if folder.exists() and not folder.is_dir():
            return [Blocked(rel, _refuse(rel, f"{shown} is not a folder", f"a folder to hold {rel}", "a file",
                                         f"move {shown} aside"))]
    if path.is_symlink():
        return [Blocked(rel, _refuse(
            rel, f"{rel} is a symbolic link", "a regular file to rewrite", f"a link to {os.readlink(path)}",
            "porter does not write through links; replace the link with the file it points to",
        ))]
    if path.exists() and not path.is_file():
        return [Blocked(rel, _refuse(rel, f"{rel} is not a regular file", "a regular file (or no file) at this path",
                                     "a folder or special file", f"move {rel} aside"))]
    found = []
    if path.exists() and not deleting and not marked_writable(path):
        found.append(_read_only(root, rel, path, "write access to every file the port changes"))
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not marked_writable(folder):
        found.append(_read_only(root, rel, folder, f"a writable folder for {rel}"))
    return found


def _count_read_only(paths: list[Path]) -> str:
    folders = sum(p.is_dir() for p in paths)
    first = paths[0]
    return (f"{folders} folders and {len(paths) - folders} files without a write bit "
            f"(e.g. {first}: {stat.filemode(first.stat().st_mode)})")


def check_writable(root: Path, paths: list[tuple[str, bool]]) -> None:
    """Refuse, naming every path in the way, when porter must not or cannot write all of
    `paths` ((path relative to the tree, whether it is deleted))."""
    found = [b for rel, deleting in paths for b in blocked(root, rel, deleting)]
    if not found:
        return
    read_only = list(dict.fromkeys(b.read_only for b in found if b.read_only is not None))
    others = [b for b in found if b.read_only is None]
    if len(found) == 1 or (len(read_only) == 1 and not others):  # one thing in the way: its own refusal
        raise found[0].error
    fixes = []
    if read_only:
        fixes.append("make them writable: chmod u+w " + " ".join(shlex.quote(str(p)) for p in read_only))
    fixes += [f"{b.rel}: {b.error.fix.removesuffix(NOTHING_WRITTEN)}" for b in others]
    what = f"{len(read_only)} files and folders porter must write are marked read-only" if read_only and not others \
        else f"porter cannot write {len(dict.fromkeys(b.rel for b in found))} of the files it must write"
    raise PorterError(
        what,
        file=", ".join(dict.fromkeys(b.rel for b in found)),
        construct="write access to every file the port writes and to the folders that hold them",
        found="; ".join(([_count_read_only(read_only)] if read_only else []) + [f"{b.rel}: {b.error.message}" for b in others]),
        fix="; ".join(fixes) + ", then run porter again" + NOTHING_WRITTEN,
    )
