"""Detector: the enums the tree defines, and whether anything uses them.

A name that exists is not a feature: microsoft's trees define
`megatron/enums.py::PositionEmbeddingType` (rotary, absolute, ...) but nothing imports it,
while Habana's and BigScience's trees type an option with it. The members come from the
parsed class; "used" is a plain word search of the tree's Python files outside the one
defining it (cheap: no parsing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import libcst as cst

ENUM_FILES = ("megatron/enums.py", "megatron/model/enums.py")


@dataclass(frozen=True)
class EnumFact:
    name: str
    path: str  # the file that defines it
    members: tuple[str, ...]
    used_by: tuple[str, ...]  # other files that mention it

    @property
    def used(self) -> bool:
        return bool(self.used_by)


def enum_classes(module: cst.Module) -> dict[str, tuple[str, ...]]:
    """class name -> member names, for top-level classes deriving from (enum.)Enum."""
    found = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.ClassDef):
            continue
        bases = [cst.Module(body=[]).code_for_node(b.value) for b in stmt.bases]
        if not any(b.split(".")[-1] in ("Enum", "IntEnum") for b in bases):
            continue
        members = []
        for line in stmt.body.body:
            if isinstance(line, cst.SimpleStatementLine):
                for small in line.body:
                    if isinstance(small, cst.Assign) and isinstance(small.targets[0].target, cst.Name):
                        members.append(small.targets[0].target.value)
        found[stmt.name.value] = tuple(members)
    return found


def python_files(root: Path) -> list[Path]:
    """The tree's own code: megatron/ and the entry scripts at its root."""
    return sorted((root / "megatron").rglob("*.py")) + sorted(root.glob("*.py"))


def find_uses(root: Path, name: str, defined_in: str) -> tuple[str, ...]:
    word = re.compile(rb"\b" + re.escape(name.encode()) + rb"\b")
    uses = []
    for path in python_files(root):
        relative = path.relative_to(root).as_posix()
        if relative == defined_in:
            continue
        try:
            if word.search(path.read_bytes()):
                uses.append(relative)
        except OSError:
            continue
    return tuple(uses)
