"""Ctrl-C and porter's writes: what state an interrupt leaves a tree in, and saying so.

porter writes a tree all or nothing (porter.writer). An interrupt while it reads and plans
stops it before the first write. While it writes, the interrupt is held back (`Held`) to the
next point where stopping is safe: before each file is staged or renamed into place, where
porter then puts back every file it already replaced (the roll-back itself is never cut
short). An interrupt that arrives after the last rename finds the change complete; it takes
effect then, and `written` records the tree, so that the message says the tree holds the
whole change rather than nothing.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

# The trees this process has written completely (a transaction committed), in order.
written: list[Path] = []


class Held:
    """SIGINT held back inside the block (main thread only: where Python delivers it).

    `stop_here()` raises KeyboardInterrupt when one arrived; one that arrives after the last
    `stop_here()` is raised when the block ends without another error.
    """

    def __init__(self) -> None:
        self.pending = False
        self._previous = None

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True

    def __enter__(self) -> Held:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def stop_here(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, kind, value, traceback) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self.pending and kind is None:
            raise KeyboardInterrupt


# What an interrupted command leaves, by command (porter.cli prints it).
_LEAVES = {
    "apply": "nothing was written: the tree is as it was (porter writes all or nothing)",
    "revert": "nothing was written: the tree is as it was (porter writes all or nothing)",
    "demo": "the demo's copy of the sample tree may be incomplete; `porter demo` replaces it",
    "convert": "nothing was written: the tree was not changed, and porter writes --out under a temporary name "
    "that it removes (renamed to --out only when complete)",
    "smoke": "the tree was not changed; the --workdir folder may hold part of a run (a next run redoes it)",
    "diff": "nothing was written (porter diff writes no file of the tree)",
}


def interrupted_message(command: str | None) -> str:
    """What to say when Ctrl-C ends `porter COMMAND` (exit status 130)."""
    if written:
        trees = ", ".join(str(tree) for tree in written)
        return f"interrupted after the write: {trees} holds the whole change (porter writes all or nothing)"
    if command is None:
        return "interrupted before the command started: nothing was written"
    return "interrupted: " + _LEAVES.get(command, "nothing was written (this command only reads the tree)")
