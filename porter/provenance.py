"""What porter wrote where: the origin of each line of a ported file (`porter explain`).

`porter apply` leaves a journal in the tree (`.porter/journal.json`, see porter.writer): for
each file it wrote, the bytes before and after, the provenance of every line it wrote
("rmsnorm: ChooseNormClass", "model: template model.py.j2"; None for a line it kept) and the
reasons of the edits. The file may have changed since: its lines are matched against the
bytes porter wrote (difflib, on whole lines), so a line that only moved keeps its origin, a
line added or rewritten by someone else is theirs, and a line porter kept is followed back
through earlier applies to the tree as it was before porter. An apply that was undone
(removed from the journal, or marked `"reverted": true` in it) is skipped.
"""

from __future__ import annotations

import base64
import difflib
import inspect
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from porter.errors import PorterError
from porter.patch import split_lines
from porter.render import template_label
from porter.workspace import sha256
from porter.writer import JOURNAL, STATE_DIR


@dataclass
class Origin:
    """Where one line of a file, as it is now, comes from."""

    line: int  # 1-based, in the file now
    text: str
    origin: str  # "porter": porter wrote it; "tree": it was there before porter; "edited": changed after porter
    apply: int | None = None  # 1-based index of the apply in the journal (porter / edited)
    model: str | None = None
    spec: str | None = None
    tag: str | None = None  # "rmsnorm: ChooseNormClass" (porter)
    written_line: int | None = None  # where porter wrote it (porter) or where it was before porter (tree)
    reasons: list[str] = field(default_factory=list)  # the plan's reasons for the edit (porter)
    replaced: list[str] = field(default_factory=list)  # porter's tags on the lines an edit replaced (edited)

    @property
    def feature(self) -> str | None:
        return self.tag.split(":", 1)[0] if self.tag else None

    @property
    def edit(self) -> str | None:
        return self.tag.split(": ", 1)[1] if self.tag and ": " in self.tag else None


def find_root(path: Path) -> Path | None:
    """The nearest folder at or above `path` with a porter journal."""
    for folder in [path, *path.parents]:
        if (folder / STATE_DIR / JOURNAL).is_file():
            return folder
    return None


def load_journal(root: Path) -> dict:
    path = root / STATE_DIR / JOURNAL
    if not path.is_file():
        raise PorterError(
            f"{root} has no porter journal: it was not ported with `porter apply`",
            file=str(path),
            construct="the journal porter apply writes",
            fix=f"port it first (porter apply llama --target {root}), or point --target at a ported tree",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PorterError(
            f"cannot read porter's journal: {exc}", file=str(path),
            fix="the journal is damaged; restore it from a backup, or re-port a clean copy of the tree",
        ) from exc


def _align(a: list[str], b: list[str]) -> tuple[list[int | None], list[tuple[int, int] | None]]:
    """For each line of b: its index in a when unchanged, else the a-range it replaced."""
    index: list[int | None] = [None] * len(b)
    replaced: list[tuple[int, int] | None] = [None] * len(b)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        for d in range(j2 - j1):
            if op == "equal":
                index[j1 + d] = i1 + d
            else:
                replaced[j1 + d] = (i1, i2)
    return index, replaced


def trace(root: Path, path: str) -> list[Origin]:
    """The origin of every line of `path` (relative to root) as it is now."""
    journal = load_journal(root)
    try:
        data = (root / path).read_bytes()
        lines = split_lines(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise PorterError(f"cannot read {path}: {exc}", file=path, fix="check the path") from exc
    origins = [Origin(line=n + 1, text=text.rstrip("\r\n"), origin="tree") for n, text in enumerate(lines)]
    applies = [
        (number, entry, record)
        for number, entry in enumerate(journal.get("applies", []), 1)
        if not entry.get("reverted")
        for record in entry.get("files", [])
        if record.get("path") == path
    ]
    pending = list(range(len(lines)))
    position = list(range(len(lines)))  # of each pending line, in `stage`
    stage = lines
    for number, entry, record in reversed(applies):
        after_b64 = record.get("after_b64")
        if after_b64 is not None:
            after = split_lines(base64.b64decode(after_b64))
        elif sha256("".join(stage).encode("utf-8")) == record.get("after_sha256"):
            after = stage  # a journal without the bytes: only an unchanged file can be explained
        else:
            raise PorterError(
                f"{path} changed since porter wrote it, and this journal does not keep what porter wrote",
                file=path, construct="after_b64 in the journal (porter >= 0.1.0)",
                fix="re-port a clean copy of the tree to explain it",
            )
        before = [] if record.get("before_b64") is None else split_lines(base64.b64decode(record["before_b64"]))
        tags = record.get("provenance", [])
        to_after, replaced = _align(after, stage)
        to_before, _ = _align(before, after)
        reasons: dict[str, list[str]] = {}
        for edit in record.get("edits", []):
            reasons.setdefault(f"{edit['feature']}: {edit['name']}", []).append(edit["reason"])
        still = []
        for idx in pending:
            origin = origins[idx]
            j = to_after[position[idx]]
            if j is None:
                i1, i2 = replaced[position[idx]]
                origin.origin = "edited"
                origin.apply, origin.model, origin.spec = number, entry.get("model"), entry.get("spec")
                origin.replaced = list(dict.fromkeys(t for t in tags[i1:i2] if t))
                continue
            tag = tags[j] if j < len(tags) else None
            if tag or to_before[j] is None:
                origin.origin = "porter"
                origin.apply, origin.model, origin.spec = number, entry.get("model"), entry.get("spec")
                origin.tag, origin.written_line = tag, j + 1
                origin.reasons = reasons.get(tag, []) if tag else []
                continue
            position[idx] = to_before[j]
            still.append(idx)
        pending = still
        stage = before
    for idx in pending:
        origins[idx].written_line = position[idx] + 1 if applies else idx + 1
    return origins


@dataclass(frozen=True)
class EditInfo:
    kind: str  # "rewrite" | "template"
    name: str  # ChooseNormClass | model.py.j2
    source: str  # porter/differences/rmsnorm/rewrites.py | templates/model.py.j2
    doc: str  # what the rewrite does and why (its docstring); a template's first comment line


def _source_of(cls: type) -> str:
    """A class's file, from the repository root (porter/edits/arguments.py, porter/differences/<name>/rewrites.py)."""
    path = Path(inspect.getsourcefile(cls) or "").resolve()
    root = Path(__file__).resolve().parent.parent
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _rewrites() -> dict[str, tuple[str, str]]:
    """Rewrite class name -> (module file, docstring), over every rewrite porter knows: the
    shared ones in porter.edits and those of every registered difference. Kept per set of
    registered differences: one registered later (a plugin) brings its rewrites with it."""
    from porter import catalog

    return _rewrites_of(tuple(d.name for d in catalog.differences()))


@cache
def _rewrites_of(registered: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    from porter.edits.base import ModuleRewrite, Rewrite

    found: dict[str, tuple[str, str]] = {}
    pending = [Rewrite, ModuleRewrite]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__doc__ and cls.__name__ not in found and cls not in (Rewrite, ModuleRewrite):
            found[cls.__name__] = (_source_of(cls), inspect.getdoc(cls) or "")
    return found


def describe_edit(name: str) -> EditInfo:
    """What a provenance tag's edit is: a rewrite's docstring, or a template's source."""
    if name.startswith("template "):
        template = name.removeprefix("template ")
        return EditInfo("template", template, template_label(template), "")
    source, doc = _rewrites().get(name, ("porter/edits/", ""))
    return EditInfo("rewrite", name, source, doc)
