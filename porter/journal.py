"""The journal: what porter did to a tree, kept in the tree (`.porter/journal.json`).

Every apply appends one entry: the spec, the folders it created, and for every file it
created or changed the bytes and SHA-256 before and after (base64) and which edit produced
each line with the edits' reasons (for `porter explain`). `porter revert` reads it back, newest entry first.

The journal is also how porter knows a port's state before planning (porter.port_state):
each file as porter left it, missing, or edited since.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from porter import __version__
from porter.errors import PorterError
from porter.workspace import sha256
from porter.writer import JOURNAL, STATE_DIR

JOURNAL_PATH = f"{STATE_DIR}/{JOURNAL}"
FORMAT = 1


@dataclass(frozen=True)
class JournalFile:
    path: str
    before: bytes | None  # None: porter created it
    after: bytes
    record: dict = field(default_factory=dict, compare=False, repr=False)  # as kept in the journal

    @property
    def created(self) -> bool:
        return self.before is None


@dataclass(frozen=True)
class Apply:
    model: str
    files: tuple[JournalFile, ...]
    created_dirs: tuple[str, ...]


def _bad(found: str) -> PorterError:
    return PorterError(
        f"porter's journal is damaged: {found}",
        file=JOURNAL_PATH,
        construct="the journal porter apply writes (JSON, format 1)",
        found=found,
        fix="restore .porter/journal.json from a backup, or restore the tree with your version control "
        "(e.g. git checkout . && git clean -fd) and delete .porter/",
    )


def _decode(item: dict, key: str, sha_key: str) -> bytes | None:
    if item.get(key) is None:
        if item.get(sha_key) is not None:
            raise _bad(f"{item.get('path')}: {sha_key} without {key}")
        return None
    try:
        data = base64.b64decode(item[key], validate=True)
    except (ValueError, TypeError) as exc:
        raise _bad(f"{item.get('path')}: {key} is not base64") from exc
    if sha256(data) != item.get(sha_key):
        raise _bad(f"{item.get('path')}: {key} does not match {sha_key}")
    return data


def read_journal(root: Path) -> list[Apply] | None:
    """The applies recorded in the tree, oldest first; None when porter never wrote it."""
    path = Path(root) / JOURNAL_PATH
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"cannot read it as JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("applies"), list):
        raise _bad("no list of applies")
    applies = []
    for entry in data["applies"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), list):
            raise _bad("an apply without its list of files")
        files = []
        for item in entry["files"]:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise _bad("a file entry without a path")
            rel = item["path"]
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise _bad(f"a path outside the tree: {rel}")
            after = _decode(item, "after_b64", "after_sha256")
            if after is None:
                raise _bad(f"{rel}: no after_b64")
            files.append(JournalFile(path=rel, before=_decode(item, "before_b64", "before_sha256"), after=after,
                                     record=item))
        dirs = entry.get("created_dirs", [])
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise _bad("created_dirs is not a list of paths")
        applies.append(Apply(model=str(entry.get("model", "?")), files=tuple(files), created_dirs=tuple(dirs)))
    return applies


def journal_bytes(applies_json: list[dict]) -> bytes:
    return (json.dumps({"porter": __version__, "format": FORMAT, "applies": applies_json}, indent=1) + "\n").encode()


def entry(model: str, spec_path: str, changes, created_dirs: list[str]) -> dict:
    """The journal entry of one apply (changes: porter.workspace.FileChange)."""
    files = []
    for change in changes:
        before = None if change.before is None else change.before.raw
        files.append(
            {
                "path": change.path,
                "created": before is None,
                "before_sha256": None if before is None else sha256(before),
                "after_sha256": sha256(change.after),
                "before_b64": None if before is None else base64.b64encode(before).decode(),
                "after_b64": base64.b64encode(change.after).decode(),
                "provenance": change.provenance,
                "edits": [{"feature": e.feature, "name": e.name, "reason": e.reason} for e in change.edits],
            }
        )
    return {"model": model, "spec": spec_path, "porter": __version__, "created_dirs": created_dirs, "files": files}


def appended(root: Path, new_entry: dict) -> tuple[bytes | None, bytes]:
    """(the journal's bytes now, its bytes with `new_entry` appended)."""
    path = Path(root) / JOURNAL_PATH
    now = path.read_bytes() if path.exists() else None
    old = json.loads(now)["applies"] if now is not None else []
    return now, journal_bytes([*old, new_entry])
