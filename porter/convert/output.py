"""The folder a conversion writes: checked first, written under another name, renamed when complete.

- Space: the bytes to write are known before the first one is (the plan); when the disk
  has fewer free, the conversion is refused with both figures and nothing is written.
- No half-written output: everything goes into a hidden folder next to --out
  (`.<name>.porter-partial-<pid>`), renamed to --out once the last byte is in. An error or
  Ctrl-C removes it; a killed process leaves only that hidden folder, which no --load or
  from_pretrained takes for a model.
- An existing --out is replaced only when it holds nothing but what porter writes there
  (an earlier conversion): any other file in it makes porter refuse, naming it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from porter.errors import PorterError

MARGIN = 1 << 20  # what a folder's own entries and the files' headers may take besides the planned bytes


def human(n: float) -> str:
    """Bytes as people read them: 3.06 GB (powers of 1000, like df -H and save_pretrained)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_space(out: Path, needed: int) -> None:
    """Refuse when the disk --out goes to has less free space than the conversion writes."""
    where = _existing(Path(out).parent)
    free = shutil.disk_usage(where).free
    if needed + MARGIN > free:
        raise PorterError(
            f"not enough disk space for the conversion: it writes {human(needed)}, {human(free)} are free",
            file=str(where), construct=f"{human(needed)} free on the disk of {out}",
            found=f"{human(free)} free ({needed} bytes to write, {free} free)",
            fix="free some space, or write --out to another disk",
        )


def _check_replaceable(out: Path, ours: Callable[[str], bool]) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise PorterError(f"{out} is a file", file=str(out), construct="a folder to write the conversion into",
                          found="a file", fix="pass another --out")
    foreign = sorted(p.name for p in out.iterdir() if not ours(p.name))
    if foreign:
        raise PorterError(
            f"{out} holds files a conversion does not write; porter replaces only an earlier conversion",
            file=str(out), construct="an empty folder, or one an earlier `porter convert` wrote",
            found=", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""),
            fix="pass a new --out folder, or remove that one",
        )


@contextmanager
def staged(out: Path, needed: int, ours: Callable[[str], bool]) -> Iterator[Path]:
    """A temporary folder to write the conversion into, renamed to `out` when the block ends well.

    `needed`: the bytes the conversion writes; `ours(name)`: whether an entry of an existing
    `out` is one a conversion writes (then `out` is replaced as a whole)."""
    out = Path(out)
    _check_replaceable(out, ours)
    check_space(out, needed)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.porter-partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.porter-old-{os.getpid()}"
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(out)
