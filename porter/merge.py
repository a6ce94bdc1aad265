"""A line-based three-way merge (difflib), for `porter revert --keep-edits`.

merge3(base, ours, theirs) applies to `base` both the changes `ours` made to it and the
changes `theirs` made to it. Changes that do not overlap combine; changes to overlapping
lines conflict (unless both sides made the same change), and the merge refuses rather
than guess: a conflict names the lines of `base` concerned. An insertion touching the edge
of the other side's change is not an overlap: its place is still unambiguous.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Hunk:
    start: int  # base lines [start, end) become `lines`
    end: int
    lines: tuple[str, ...]
    side: str


class MergeConflict(Exception):
    def __init__(self, spans: list[tuple[int, int]]) -> None:
        super().__init__(spans)
        self.spans = spans  # 1-based, inclusive line ranges of base

    def describe(self) -> str:
        return ", ".join(f"line {a}" if a == b else f"lines {a}-{b}" for a, b in self.spans)


def _hunks(base: list[str], other: list[str], side: str) -> list[Hunk]:
    matcher = difflib.SequenceMatcher(a=base, b=other, autojunk=False)
    return [
        Hunk(i1, i2, tuple(other[j1:j2]), side)
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    ]


def _overlap(a: Hunk, b: Hunk) -> bool:
    if a.start == a.end and b.start == b.end:
        return a.start == b.start
    if a.start == a.end:
        return b.start < a.start < b.end
    if b.start == b.end:
        return a.start < b.start < a.end
    return a.start < b.end and b.start < a.end


def merge3(base: list[str], ours: list[str], theirs: list[str]) -> list[str]:
    hunks = _hunks(base, ours, "ours") + _hunks(base, theirs, "theirs")
    # Insertions before replacements at the same place; then by side for a stable order.
    hunks.sort(key=lambda h: (h.start, h.end, h.side))
    kept: list[Hunk] = []
    conflicts: list[tuple[int, int]] = []
    for hunk in hunks:
        clash = next((k for k in kept if _overlap(k, hunk)), None)
        if clash is None:
            kept.append(hunk)
        elif (clash.start, clash.end, clash.lines) != (hunk.start, hunk.end, hunk.lines):
            start, end = min(clash.start, hunk.start), max(clash.end, hunk.end)
            conflicts.append((start + 1, max(start + 1, end)))
    if conflicts:
        raise MergeConflict(conflicts)
    out: list[str] = []
    pos = 0
    for hunk in sorted(kept, key=lambda h: (h.start, h.end)):
        out.extend(base[pos : hunk.start])
        out.extend(hunk.lines)
        pos = max(pos, hunk.end)
    out.extend(base[pos:])
    return out
