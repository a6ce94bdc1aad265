"""generated/: porter's own output on the bundled sample tree, kept in git.

`python -m porter.golden --write` regenerates it; `--check` (and the test suite) fails on
any drift and prints the diff. For each spec it holds every file the port writes or
changes, at its path in the tree, and the combined patch `<spec>.patch`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from porter.patch import patch
from porter.port import prepare
from porter.resources import sample_tree_dir


def specs() -> list[str]:
    """Every bundled spec that ports something (gpt, the base, plans nothing)."""
    from porter.catalog import available_specs

    return [name for name in available_specs() if name != "gpt"]


def render_generated(spec: str) -> dict[str, str]:
    """relative path under generated/ -> content."""
    port = prepare(spec, sample_tree_dir())
    files = {f"{spec}/{change.path}": change.text for change in port.changes}
    files[f"{spec}.patch"] = patch(port.changes)
    return files


def drift(root: Path) -> str:
    """A unified diff of generated/ against a fresh rendering; empty when in sync."""
    out = []
    expected: dict[str, str] = {}
    for spec in specs():
        expected.update(render_generated(spec))
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    for name in sorted(set(expected) | present):
        old = (root / name).read_text() if name in present else ""
        new = expected.get(name, "")
        if old != new:
            out.extend(
                difflib.unified_diff(
                    old.splitlines(keepends=True), new.splitlines(keepends=True),
                    fromfile=f"generated/{name} (committed)", tofile=f"generated/{name} (porter now)",
                )
            )
    return "".join(out)


def write(root: Path) -> None:
    import shutil

    for spec in specs():
        shutil.rmtree(root / spec, ignore_errors=True)
        for name, text in render_generated(spec).items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent / "generated")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    ns = parser.parse_args()
    if ns.write:
        write(ns.root)
        return
    diff = drift(ns.root)
    sys.stdout.write(diff)
    sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
