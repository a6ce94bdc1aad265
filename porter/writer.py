"""Writing into the user's tree: all or nothing, under a lock.

`Transaction` is the only code in porter that changes a file in a target tree. Given the
bytes every file must hold now and the bytes it must hold after (None: absent), it

1. refuses, before any write, when a file cannot or must not be written (porter.writable: a
   symbolic link on the way, a file or folder marked read-only, a folder where a file should
   be), naming every such path at once;
2. refuses when any file is not what porter read (the tree changed while porter worked);
3. writes each new content to a temporary file beside its target (flushed to disk);
4. renames every temporary into place, moving files to delete aside first; if anything fails
   now, every file already replaced gets its original bytes back (kept in memory), files
   moved aside are moved back, folders porter created are removed, and the error says the
   tree was restored. Ctrl-C is held back to the point before the next file (porter.interrupts),
   where it is answered the same way: nothing is left half written, and the roll-back itself
   is not cut short.

The lock (`.porter/lock`, created with O_EXCL) is held across a whole apply or revert, from
reading the tree to writing it, so two porter runs cannot interleave.
"""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from porter import interrupts
from porter.errors import PorterError
from porter.writable import check_writable, marked_writable

STATE_DIR = ".porter"
LOCK = "lock"
JOURNAL = "journal.json"  # kept by porter.journal
NEW_FILE_MODE = 0o644


@dataclass(frozen=True)
class FileWrite:
    """One file of a transaction: what it holds now and what it must hold after."""

    path: str  # relative to the tree root, forward slashes
    now: bytes | None  # None: the file must not exist now
    after: bytes | None  # None: delete it


# -- the lock ------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_holder(lock: Path) -> str:
    try:
        text = lock.read_text().strip()
    except OSError:
        return "an unknown process"
    if not text.isdigit():
        return "an unknown process"
    pid = int(text)
    if _pid_alive(pid):
        return f"process {pid}, still running"
    return f"process {pid}, which is no longer running (a stale lock: that run was killed)"


@contextmanager
def tree_lock(root: Path) -> Iterator[None]:
    """Hold `.porter/lock` in the tree; refuse when another porter run holds it.

    The `.porter` folder is removed again on the way out when nothing else was kept in it,
    so a run that writes nothing leaves the tree as it found it.
    """
    root = Path(root)
    state = root / STATE_DIR
    lock = state / LOCK
    if not marked_writable(root):
        raise PorterError(
            f"the tree {root} is marked read-only",
            file=str(root),
            construct="a writable tree root (porter keeps its lock and journal in .porter/)",
            fix=f"make it writable (chmod u+w {shlex.quote(str(root))}) and run porter again; nothing was written",
        )
    existed = state.exists()
    try:
        state.mkdir(exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise PorterError(
            "another porter run is working on this tree",
            file=str(lock),
            construct="an unlocked tree",
            found=f"the lock file {lock}, held by {_lock_holder(lock)}",
            fix=f"wait for the other run to finish; if none is running, delete {lock}",
        ) from None
    except OSError as exc:
        if not existed:
            try:
                state.rmdir()
            except OSError:
                pass
        raise PorterError(
            f"cannot write to the tree: {exc.strerror}",
            file=str(state),
            construct="a writable tree root (porter keeps its lock and journal in .porter/)",
            fix="make the tree writable (nothing was written)",
        ) from exc
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)
        try:
            state.rmdir()  # only when empty: no journal was kept
        except OSError:
            pass


# -- checks before writing ---------------------------------------------------------------------


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise PorterError(f"cannot read {path}: {exc.strerror}", file=str(path), fix="make it readable") from exc


# -- the transaction ----------------------------------------------------------------------------


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".porter-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Transaction:
    """Write a set of files all or nothing (see the module docstring)."""

    def __init__(self, root: Path, writes: list[FileWrite]) -> None:
        self.root = Path(root)
        self.writes = [w for w in writes if w.now != w.after]
        self.created_dirs: list[str] = []  # folders the commit created, outermost first

    def check(self) -> None:
        check_writable(self.root, [(write.path, write.after is None) for write in self.writes])
        for write in self.writes:
            if _current(self.root / write.path) != write.now:
                raise PorterError(
                    f"{write.path} changed while porter was working",
                    file=write.path,
                    construct="the file as porter read it",
                    found="different bytes now",
                    fix="another program is writing the tree; let it finish and run porter again (nothing was written)",
                )

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            new.mkdir()
            self.created_dirs.append(str(new.relative_to(self.root)).replace(os.sep, "/"))

    def commit(self) -> None:
        """Check, stage, rename; on any failure or interrupt put everything back and raise."""
        self.check()
        staged: list[tuple[FileWrite, Path | None]] = []
        done: list[tuple[FileWrite, Path | None]] = []  # with the aside path of deleted files
        with interrupts.Held() as interrupt:  # Ctrl-C takes effect only where stopping is safe
            try:
                for write in self.writes:
                    interrupt.stop_here()
                    path = self.root / write.path
                    if write.after is None:
                        staged.append((write, None))
                        continue
                    self._make_dirs(path.parent)
                    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else NEW_FILE_MODE
                    staged.append((write, _write_temp(path, write.after, mode)))
                for write, tmp in staged:
                    interrupt.stop_here()
                    path = self.root / write.path
                    if tmp is None:
                        aside = path.with_name(f".{path.name}.porter-deleted")
                        os.replace(path, aside)
                        done.append((write, aside))
                    else:
                        os.replace(tmp, path)
                        done.append((write, None))
                for folder in {(self.root / w.path).parent for w in self.writes}:
                    _fsync_dir(folder)
            except BaseException as exc:
                self._roll_back(done, staged)
                if isinstance(exc, OSError):
                    raise PorterError(
                        f"writing the tree failed: {exc.strerror or exc}",
                        file=str(getattr(exc, "filename", None) or self.root),
                        construct="every file of the change written, or none",
                        found=str(exc),
                        fix="fix the cause (disk full? permissions?) and run porter again; "
                        "every file was put back as it was",
                    ) from exc
                raise
            for _, aside in done:
                if aside is not None:
                    aside.unlink(missing_ok=True)
            interrupts.written.append(self.root)

    def _roll_back(self, done, staged) -> None:
        for write, aside in reversed(done):
            path = self.root / write.path
            try:
                if aside is not None:
                    os.replace(aside, path)
                elif write.now is None:
                    path.unlink(missing_ok=True)
                else:
                    restore = _write_temp(path, write.now, stat.S_IMODE(path.stat().st_mode))
                    os.replace(restore, path)
            except OSError:
                pass  # best effort: keep restoring the others
        for _, tmp in staged:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        for rel in reversed(self.created_dirs):
            try:
                (self.root / rel).rmdir()
            except OSError:
                pass
        self.created_dirs = []


def remove_empty_dirs(root: Path, folders: list[str]) -> None:
    """Remove folders (innermost first) that are empty; keep any that hold something."""
    for rel in sorted(folders, key=lambda f: f.count("/"), reverse=True):
        try:
            (root / rel).rmdir()
        except OSError:
            pass
