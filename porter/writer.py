"""Writing a port into the tree: all or nothing, with a journal for `porter revert`.

Order of work: take the tree's lock (`.porter/lock`, so two porter runs cannot interleave);
check that no file changed since it was read; write every new file's content to a temporary
file beside it; then rename them all into place. If anything fails before the renames,
the temporaries are removed and the tree is untouched; if a rename fails, the files already
renamed are put back from the originals kept in memory. The journal (`.porter/journal.json`)
records each file created or changed, with its hashes before and after and the original
bytes (for revert), and the provenance of each line it wrote, with its bytes and the edits' reasons (for
`porter explain`).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from porter import __version__
from porter.errors import PorterError
from porter.workspace import FileChange, sha256

STATE_DIR = ".porter"
JOURNAL = "journal.json"
LOCK = "lock"


@contextmanager
def tree_lock(root: Path):
    """An exclusive lock file in the tree; refuses when another porter run holds it."""
    state = root / STATE_DIR
    lock = state / LOCK
    try:
        state.mkdir(exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise PorterError(
            "another porter run is writing this tree",
            file=str(lock),
            construct="an unlocked tree",
            found=f"the lock file {lock} (pid {_read(lock)})",
            fix=f"wait for the other run to finish; if none is running, delete {lock}",
        ) from None
    except OSError as exc:
        raise PorterError(
            f"cannot write to the tree: {exc.strerror}",
            file=str(state),
            fix="make the tree writable (porter writes nothing until it can write everything)",
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


def _read(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def check_writable(root: Path, changes: list[FileChange]) -> None:
    """Refuse before writing anything when any target cannot be written."""
    for change in changes:
        path = root / change.path
        folder = path.parent
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if path.is_symlink():
            raise PorterError(
                f"{change.path} is a symbolic link",
                file=change.path,
                construct="a regular file to rewrite",
                found=f"a link to {os.readlink(path)}",
                fix="porter does not write through links; replace the link with the file it points to",
            )
        if (path.exists() and not os.access(path, os.W_OK)) or not os.access(existing, os.W_OK):
            raise PorterError(
                f"{change.path} is not writable",
                file=change.path,
                construct="write access to every file the port changes",
                fix=f"make {change.path} and its folder writable (nothing was written)",
            )


def write_changes(root: Path, changes: list[FileChange], journal_entry: dict) -> None:
    """Write all changes atomically and append the journal entry."""
    check_writable(root, changes)
    for change in changes:  # nothing may have changed since porter read it
        path = root / change.path
        now = path.read_bytes() if path.exists() else None
        then = None if change.before is None else change.before.raw
        if now != then:
            raise PorterError(
                f"{change.path} changed while porter was working",
                file=change.path,
                fix="run porter again",
            )
    staged: list[tuple[Path, Path]] = []
    try:
        for change in changes:
            path = root / change.path
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".porter-tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(change.after)
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            else:
                os.chmod(tmp, 0o644)
            staged.append((Path(tmp), path))
        journal = _load_journal(root)
        journal["applies"].append(journal_entry)
        fd, journal_tmp = tempfile.mkstemp(prefix=".journal.", dir=root / STATE_DIR)
        with os.fdopen(fd, "w") as handle:
            json.dump(journal, handle, indent=1)
        staged.append((Path(journal_tmp), root / STATE_DIR / JOURNAL))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    done: list[Path] = []
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        originals = {root / c.path: c.before for c in changes}
        for path in done:
            before = originals.get(path)
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before.raw)
        for tmp, _ in staged[len(done):]:
            tmp.unlink(missing_ok=True)
        raise


def _load_journal(root: Path) -> dict:
    path = root / STATE_DIR / JOURNAL
    if path.exists():
        return json.loads(path.read_text())
    return {"porter": __version__, "applies": []}


def journal_entry(model: str, spec_path: str, changes: list[FileChange]) -> dict:
    files = []
    for change in changes:
        files.append(
            {
                "path": change.path,
                "created": change.created,
                "before_sha256": None if change.before is None else sha256(change.before.raw),
                "after_sha256": sha256(change.after),
                "before_b64": None if change.before is None else base64.b64encode(change.before.raw).decode(),
                "after_b64": base64.b64encode(change.after).decode(),  # explain maps later edits back to it
                "provenance": change.provenance,
                "edits": [{"feature": e.feature, "name": e.name, "reason": e.reason} for e in change.edits],
            }
        )
    return {"model": model, "spec": spec_path, "porter": __version__, "files": files}
