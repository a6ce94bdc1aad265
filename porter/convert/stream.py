"""How a conversion streams: plan every output file first, then fill it a tensor at a time.

A conversion runs its stream of tensors twice. First on the meta device (shapes and dtypes,
no data): that plans every output file (its structure, where each tensor's bytes go) and the
bytes to write, before anything is read or written. Then for real: each tensor is read when
its part needs it, written at its planned place as soon as it is made (`Fill.put`) and
dropped; a file is closed when its last tensor is in. What is held at a time is one part of
the model (a layer, or the embedding) and the tensors read for it, whatever the model's size.

`Stats` are the figures a conversion reports (`--json`): bytes read and written, seconds,
and the peak resident memory of the process (VmHWM: everything the process held at its
worst moment, Python and torch included, mapped file pages too).
"""

from __future__ import annotations

import os
import queue
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from porter.convert.file_bytes import write_at
from porter.convert.pieces import as_meta, nbytes
from porter.errors import PorterError

# torch's CPU allocator asks for transparent huge pages for its large blocks: a conversion
# makes a fresh tensor wherever a layout changes, and faulting its memory in 4 kB pages costs
# more than copying into it (about 2.5x less CPU with huge pages where the kernel offers them).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


class Progress:
    """What a conversion tells as it goes (porter.cli draws a bar from it); this one tells nothing."""

    def start(self, tensors: int, nbytes: int) -> None:
        pass

    def advance(self, tensors: int, nbytes: int) -> None:
        pass


def peak_bytes() -> int:
    """The peak resident memory of this process so far, in bytes: Linux's VmHWM (of this program
    since it started: ru_maxrss would also count the memory of the process that started it,
    which a fork and exec carry over), else ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS says bytes, the others KiB


@dataclass
class Stats:
    bytes_read: int = 0
    bytes_written: int = 0
    tensors: int = 0
    files: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def finish(self) -> Stats:
        self.seconds = time.monotonic() - self.started
        return self

    def as_dict(self) -> dict:
        return {"bytes_read": self.bytes_read, "bytes_written": self.bytes_written, "peak_bytes": peak_bytes(),
                "seconds": round(self.seconds, 3)}


class Fill:
    """Writes each planned tensor at its place: `places[(file, key)] = offset` in the files under folder.

    The writes run in a thread of their own (the kernel's copies release the GIL), so that the
    next part is read and laid out while the last one goes to disk; at most `in_flight` bytes
    (the largest planned tensor's) wait to be written."""

    def __init__(self, folder: Path, planned: list[tuple[str, object, torch.Tensor]], places: dict[tuple, int],
                 stats: Stats, progress: Progress, in_flight: int | None = None) -> None:
        self.folder = Path(folder)
        self.planned = planned
        self.places = places
        self.stats = stats
        self.progress = progress
        self.left = Counter(file for file, _, _ in planned)
        self.open: dict[str, int] = {}
        self.done = 0
        largest = max((nbytes(t) for _, _, t in planned), default=0)
        self.in_flight = in_flight if in_flight is not None else largest
        self._waiting = 0
        self._room = threading.Condition()
        self._jobs: queue.Queue = queue.Queue()
        self._failed: BaseException | None = None
        self._writer = threading.Thread(target=self._write, name="porter-convert-writer", daemon=True)
        self._writer.start()

    def put(self, file: str, key, tensor) -> None:
        """Write the next tensor of the plan (the stream must run as it did when planned)."""
        if self.done >= len(self.planned):
            raise PorterError("the conversion made more tensors than it planned", construct=f"{file}: {key}",
                              fix="report this as a bug in porter convert")
        want_file, want_key, want = self.planned[self.done]
        want, made = as_meta(want), as_meta(tensor)
        if (want_file, want_key) != (file, key) or want.shape != made.shape or want.dtype != made.dtype:
            raise PorterError("the conversion made another tensor than it planned", construct=f"{want_file}: {want_key}",
                              found=f"{file}: {key} {tuple(made.shape)} {made.dtype}",
                              fix="report this as a bug in porter convert")
        self.done += 1
        size = nbytes(tensor)
        with self._room:
            while self._waiting and self._waiting + size > self.in_flight and self._failed is None:
                self._room.wait()
            self._waiting += size
        self._raise()
        self._jobs.put((file, self.places[(file, key)], tensor, size))

    def _write(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            file, offset, tensor, size = job
            try:
                if self._failed is None:
                    fd = self.open.get(file)
                    if fd is None:
                        fd = self.open[file] = os.open(self.folder / file, os.O_WRONLY)
                    written = write_at(fd, offset, tensor)
                    self.stats.tensors += 1
                    self.stats.bytes_written += written
                    self.progress.advance(1, written)
                    self.left[file] -= 1
                    if not self.left[file]:  # the file is complete: let it go
                        os.close(self.open.pop(file))
            except BaseException as exc:  # raised in the caller's thread, at its next put or close
                self._failed = exc
            del tensor, job
            with self._room:
                self._waiting -= size
                self._room.notify_all()

    def _raise(self) -> None:
        if self._failed is not None:
            raise self._failed

    def close(self) -> None:
        """Wait for the writes, and close the files."""
        if self._writer.is_alive():
            self._jobs.put(None)
            self._writer.join()
        for fd in self.open.values():
            os.close(fd)
        self.open.clear()

    def check(self) -> None:
        """After the last tensor: every planned one was written."""
        self.close()
        self._raise()
        if self.stats.tensors != len(self.planned):
            raise PorterError("the conversion made fewer tensors than it planned",
                              found=f"{self.stats.tensors} of {len(self.planned)}",
                              fix="report this as a bug in porter convert")
