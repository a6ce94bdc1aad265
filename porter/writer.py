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

The lock (`.porter/lock`, an fcntl.flock on that file) is held across a whole apply or
revert, from reading the tree to writing it, so two porter runs cannot interleave. The kernel
releases it when its process ends, however it ends: a run killed outright (SIGKILL, a machine
that lost power) leaves the file but no lock, and the next run takes it. Before staging, a
transaction records what every file holds now (`.porter/pending.json`, removed once the
change is whole or rolled back); the next run to take the lock finds the record of a killed
one and puts those files back first (`recover`), so the tree is as it was before that run.
"""

from __future__ import annotations

import base64
import fcntl
import json
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
PENDING = "pending.json"  # a transaction's record of the files as they were, while it writes
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
    return f"process {pid}, which does not run on this machine (a porter run on another machine sharing the tree?)"


def _take(lock: Path) -> int | None:
    """The lock file, open and flocked by this process; None when another process holds it.

    A holder that finishes unlinks the file while it still holds it: a file taken after that
    is no longer the one at the path, and is taken again."""
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


@contextmanager
def tree_lock(root: Path) -> Iterator[None]:
    """Hold `.porter/lock` in the tree; refuse when another porter run holds it.

    A lock file left by a run that was killed is taken over, and what that run's transaction
    had begun to write is put back first (`recover`). The `.porter` folder is removed again on
    the way out when nothing else was kept in it, so a run that writes nothing leaves the tree
    as it found it.
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
        fd = _take(lock)
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
    if fd is None:
        raise PorterError(
            "another porter run is working on this tree",
            file=str(lock),
            construct="an unlocked tree",
            found=f"the lock file {lock}, held by {_lock_holder(lock)}",
            fix="wait for the other run to finish (its lock ends with it)",
        )
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        recover(root)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: a run waiting for it takes a new file
        os.close(fd)
        try:
            state.rmdir()  # only when empty: no journal was kept
        except OSError:
            pass


# -- a killed run's transaction, put back ------------------------------------------------------


def _pending(root: Path) -> Path:
    return Path(root) / STATE_DIR / PENDING


def _record(root: Path, writes: list[FileWrite], created_dirs: list[str]) -> None:
    """Write the pending record (atomically, flushed): every file as it is now, the folders to be made."""
    record = {"files": [{"path": w.path, "now": None if w.now is None else base64.b64encode(w.now).decode()}
                        for w in writes], "created_dirs": created_dirs}
    path = _pending(root)
    tmp = _write_temp(path, json.dumps(record).encode(), NEW_FILE_MODE)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def recover(root: Path) -> list[str]:
    """Put back what a killed run's transaction had begun to change (its pending record):
    temporaries removed, files moved aside moved back, every file its bytes from before that
    run, folders it made removed when empty. Returns the files put back."""
    root = Path(root)
    path = _pending(root)
    for leftover in path.parent.glob(f".{PENDING}.*.porter-tmp"):
        leftover.unlink(missing_ok=True)  # killed while writing the record: nothing was staged yet
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    restored = []
    for item in record["files"]:
        target = root / item["path"]
        now = None if item["now"] is None else base64.b64decode(item["now"])
        for tmp in target.parent.glob(f".{target.name}.*.porter-tmp"):
            tmp.unlink(missing_ok=True)
        aside = target.with_name(f".{target.name}.porter-deleted")
        if aside.exists():
            if target.exists():
                aside.unlink()
            else:
                os.replace(aside, target)
        current = _current(target)
        if current == now:
            continue
        if now is None:
            target.unlink()
        else:
            mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else NEW_FILE_MODE
            os.replace(_write_temp(target, now, mode), target)
        restored.append(item["path"])
    remove_empty_dirs(root, record["created_dirs"])
    path.unlink()
    return restored


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

    def _missing_dirs(self) -> list[str]:
        """The folders the writes need that do not exist yet, outermost first."""
        missing: set[str] = set()
        for write in self.writes:
            folder = (self.root / write.path).parent
            while write.after is not None and not folder.exists():
                missing.add(str(folder.relative_to(self.root)).replace(os.sep, "/"))
                folder = folder.parent
        return sorted(missing, key=lambda d: (d.count("/"), d))

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
                _record(self.root, self.writes, self._missing_dirs())
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
                _pending(self.root).unlink(missing_ok=True)
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
            _pending(self.root).unlink(missing_ok=True)
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
