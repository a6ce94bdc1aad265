"""What a smoke run gave: its losses, how it ended, and whether the loss fell."""

from __future__ import annotations

from dataclasses import dataclass, field

from porter.treerun import standins
from porter.treerun.failure import TreeFailure


@dataclass
class SmokeResult:
    losses: list[float]
    command: list[str]
    log: str
    seconds: float
    returncode: int
    standins: list[standins.StandIn] = field(default_factory=list)  # the stand-ins the run used
    error: TreeFailure | None = None  # why the run stopped, when it did
    exit_warning: str | None = None  # the run failed at its exit only, after its last step (Run.ended_after_training)

    @property
    def trained(self) -> bool:
        """The training ran to its end (its exit aside, see exit_warning)."""
        return self.returncode == 0 or self.exit_warning is not None

    @property
    def first(self) -> float:
        return sum(self.losses[:5]) / max(1, len(self.losses[:5]))

    @property
    def last(self) -> float:
        return sum(self.losses[-5:]) / max(1, len(self.losses[-5:]))

    @property
    def passed(self) -> bool:
        return self.trained and len(self.losses) >= 10 and self.last < self.first

    @property
    def failure(self) -> str | None:
        """What failed, in one line (None when the run passed)."""
        if self.passed:
            return None
        if not self.trained:
            what = self.error.summary if self.error else "no traceback in its log"
            return f"the training run stopped (exit status {self.returncode}) after {len(self.losses)} steps: {what}"
        if len(self.losses) < 10:
            return f"the training run logged {len(self.losses)} losses; 10 are needed to judge the loss"
        return (f"the loss did not fall: mean of the first 5 steps {self.first:.4f}, of the last 5 "
                f"{self.last:.4f}")

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failure": self.failure,
            "standins": [s.name for s in self.standins],
            "losses": self.losses,
            "first5_mean": self.first,
            "last5_mean": self.last,
            "returncode": self.returncode,
            "exit_warning": self.exit_warning,
            "seconds": round(self.seconds, 2),
            "command": self.command,
        }
