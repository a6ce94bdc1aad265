"""One of the tree's scripts (pretrain_*.py) run to its end, its losses read from its log as they come."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from porter.treerun.process import (
    child_of_this_process,
    environment,
    output_lines,
    remove_orphaned_shared_memory,
    remove_shared_memory,
    stop_group,
)

# "iteration 3/20 | ... | lm loss: 6.123456E+00 |", also upstream's right-aligned form; nan/inf parse too.
LOSS_LINE = re.compile(r"iteration\s+(\d+)\s*/\s*\d+.*?lm loss:\s*([-+0-9.eEnaNif]+)")
TRACEBACK = "Traceback (most recent call last):"


@dataclass
class Run:
    """One training run: the losses rank 0 logged (by iteration), its output, how it ended."""

    losses: dict[int, float]
    command: list[str]
    log: str
    seconds: float
    returncode: int

    def ended_after_training(self, steps: int) -> str | None:
        """When the run failed only at its exit, after logging the loss of its last step (`steps`)
        with no Python error after it (a C++ abort as threads are torn down: "terminate called
        without an active exception"): a warning saying so. None otherwise."""
        if self.returncode == 0 or max(self.losses, default=0) < steps:
            return None
        last = max(m.start() for m in LOSS_LINE.finditer(self.log))
        after = self.log[last:]
        if TRACEBACK in after:
            return None
        said = [line.strip() for line in after.splitlines()[1:] if line.strip()]
        return (f"the training run logged all {steps} steps, then ended with exit status {self.returncode} at its "
                f"exit" + (f" ({said[-1][:200]})" if said else "") + "; its losses are complete")


def launch(
    tree: Path,
    script: str,
    args: list[str],
    nproc: int = 1,
    env: dict[str, str] | None = None,
    on_loss: Callable[[int, float], None] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    cpu: bool = True,
) -> Run:
    """Run `script` of `tree` on CPU in `nproc` processes (torchrun when > 1), streaming its log:
    `on_loss(step, loss)` hears each step rank 0 logs, `on_line` each line of output."""
    run_env = environment(Path(tree), nproc, cpu)
    run_env.update(env or {})
    # under porter.treerun.standins.launch: it installs the stand-ins (if any) first, and ends the run cleanly
    entry = ["-m", "porter.treerun.standins.launch"]
    if nproc == 1:
        cmd = [sys.executable, *entry, script, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", run_env["MASTER_PORT"], *entry, script, *args]
    start = time.monotonic()
    losses: dict[int, float] = {}
    lines: list[str] = []
    remove_orphaned_shared_memory()
    proc = subprocess.Popen(cmd, cwd=tree, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **child_of_this_process())
    try:
        deadline = None if timeout is None else start + timeout
        for line in output_lines(proc, deadline):
            if line is None:  # the deadline passed
                stop_group(proc)
                lines.append(f"porter: killed after {timeout} s\n")
                break
            lines.append(line)
            if on_line:
                on_line(line)
            match = LOSS_LINE.search(line)
            if match:
                step, loss = int(match.group(1)), float(match.group(2))
                if step not in losses:
                    losses[step] = loss
                    if on_loss:
                        on_loss(step, loss)
        returncode = proc.wait()
    except BaseException:
        stop_group(proc)
        raise
    finally:  # a run cut short leaves no buffers either: each holds tens of MB of memory
        remove_shared_memory(run_env)
    return Run(losses=losses, command=cmd, log="".join(lines), seconds=time.monotonic() - start, returncode=returncode)
