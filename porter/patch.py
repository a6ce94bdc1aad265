"""Patches in git's format, byte for byte, and what they add up to (`porter diff`).

A patch is made from each file's exact bytes before and after the port — not from the
normalised text porter edits — so that `git apply` accepts it on the target tree as it is:
CRLF files keep their "\\r\\n" in every line, a byte-order mark stays in the first line, a
file without a final newline gets git's "\\ No newline at end of file" marker, and a created
file is a `new file mode 100644` diff from /dev/null. Lines are split on "\\n" only (a form
feed or a "\\r" inside a line is part of that line, as git sees it).

The statistics (`porter diff --stat`) count the same lines the patch shows, per file and per
spec key: each added line belongs to the feature that wrote it (the file's provenance), and
each removed line to the features of the lines that replace it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from porter.workspace import FileChange

UNATTRIBUTED = "(other)"  # a removed line that no porter line replaces


def split_lines(data: bytes) -> list[str]:
    """The lines of a file as git counts them: split after each "\\n", ends kept."""
    text = data.decode("utf-8")
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _before_bytes(change: FileChange) -> bytes:
    return b"" if change.before is None else change.before.raw


def _range(start: int, length: int) -> str:
    """A hunk range as diff and git write it: `start,length`, `start` alone when length is 1."""
    if length == 1:
        return f"{start + 1}"
    if length == 0:
        return f"{start},0"
    return f"{start + 1},{length}"


def _line(prefix: str, line: str) -> str:
    if line.endswith("\n"):
        return prefix + line
    return prefix + line + "\n\\ No newline at end of file\n"


@dataclass
class Hunk:
    """One hunk: its header and lines, and the new-file line numbers (0-based) it adds."""

    header: str  # "@@ -a,b +c,d @@"
    lines: list[str]  # each with its prefix and its own line end
    added: list[int] = field(default_factory=list)


def hunks(change: FileChange, context: int = 3) -> Iterator[Hunk]:
    old = split_lines(_before_bytes(change))
    new = split_lines(change.after)
    matcher = difflib.SequenceMatcher(None, old, new)
    for group in matcher.get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        hunk = Hunk(header=f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@", lines=[])
        for op, a1, a2, b1, b2 in group:
            if op == "equal":
                hunk.lines.extend(_line(" ", line) for line in old[a1:a2])
                continue
            hunk.lines.extend(_line("-", line) for line in old[a1:a2])
            hunk.lines.extend(_line("+", line) for line in new[b1:b2])
            hunk.added.extend(range(b1, b2))
        yield hunk


def file_header(change: FileChange, empty: bool = False) -> str:
    """The lines before the hunks; a created empty file has no `---`/`+++` lines (as git writes it)."""
    head = f"diff --git a/{change.path} b/{change.path}\n"
    if change.created:
        return head + "new file mode 100644\n" + ("" if empty else f"--- /dev/null\n+++ b/{change.path}\n")
    return head + f"--- a/{change.path}\n+++ b/{change.path}\n"


def file_patch(change: FileChange, context: int = 3) -> str:
    """This file's part of the patch; empty when its bytes do not change (a created file always has one)."""
    body = [hunk.header + "\n" + "".join(hunk.lines) for hunk in hunks(change, context)]
    if not body:
        return file_header(change, empty=True) if change.created else ""
    return file_header(change) + "".join(body)


def patch(changes: list[FileChange]) -> str:
    """The whole port as one patch, in the order the plan touches files."""
    return "".join(file_patch(change) for change in changes)


@dataclass
class FileStat:
    path: str
    created: bool
    added: int
    removed: int
    by_feature: dict[str, tuple[int, int]]  # feature -> (added, removed), in order of first line


@dataclass
class FeatureStat:
    feature: str
    files: list[str]
    added: int
    removed: int


def feature_of(tag: str | None) -> str:
    """The spec key of a provenance tag ("rmsnorm: ChooseNormClass" -> "rmsnorm")."""
    return UNATTRIBUTED if not tag else tag.split(":", 1)[0]


def _block_features(tags: list[str | None]) -> list[str]:
    """The feature of each added line of one changed block. A line without a tag (a blank line
    the diff aligned differently from the edit that moved it) takes its block's nearest tag."""
    known = [(k, t) for k, t in enumerate(tags) if t]
    if not known:
        return [UNATTRIBUTED] * len(tags)
    return [feature_of(t or min(known, key=lambda kt: abs(kt[0] - k))[1]) for k, t in enumerate(tags)]


def file_stat(change: FileChange) -> FileStat:
    old = split_lines(_before_bytes(change))
    new = split_lines(change.after)
    tags = change.provenance
    counts: dict[str, list[int]] = {}
    added = removed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new).get_opcodes():
        if op == "equal":
            continue
        features = _block_features([tags[j] if j < len(tags) else None for j in range(j1, j2)])
        for feature in features:
            counts.setdefault(feature, [0, 0])[0] += 1
        # removed lines go to the features that replace them, shared out in order
        owners = features or [UNATTRIBUTED]
        for k in range(i2 - i1):
            counts.setdefault(owners[k * len(owners) // (i2 - i1)], [0, 0])[1] += 1
        added += j2 - j1
        removed += i2 - i1
    return FileStat(
        path=change.path,
        created=change.created,
        added=added,
        removed=removed,
        by_feature={k: (v[0], v[1]) for k, v in counts.items()},
    )


def feature_stats(stats: list[FileStat], order: list[str] = ()) -> list[FeatureStat]:
    """Per spec key: the files it touches and the lines it adds and removes, in `order` (the
    plan's) first."""
    out: dict[str, FeatureStat] = {feature: FeatureStat(feature=feature, files=[], added=0, removed=0) for feature in order}
    for stat in stats:
        for feature, (added, removed) in stat.by_feature.items():
            entry = out.setdefault(feature, FeatureStat(feature=feature, files=[], added=0, removed=0))
            entry.files.append(stat.path)
            entry.added += added
            entry.removed += removed
    return [entry for entry in out.values() if entry.files]
