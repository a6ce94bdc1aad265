"""Running porter's modules inside the target tree, from the parent process.

The tree's `megatron` keeps global state and must come first on sys.path, so everything
that imports it runs in a process of its own: `python -m <porter module> JOB.json` in a
scratch copy of the tree (porter.treerun.scratch: the user's tree is never written), with the
copy's folder on PYTHONPATH (porter.treerun.process.environment), through
porter.treerun.standins.launch on the CPU, under torch.distributed.run when it needs several
ranks. What such a process passes to the tree is porter.treerun.argv's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from porter.errors import PorterError
from porter.treerun import standins
from porter.treerun.failure import classify
from porter.treerun.process import (
    child_of_this_process,
    environment,
    remove_orphaned_shared_memory,
    remove_shared_memory,
    stop_group,
)
from porter.treerun.scratch import in_tree_terms, scratch_copy


def run_in_tree(tree: Path, module: str, job_path: Path, nproc: int, log: Path, timeout: float,
                what: str, env: dict[str, str] | None = None, cpu: bool = True) -> list[standins.StandIn]:
    """`python -m module job_path` in a scratch copy of the tree (<job folder>/tree): one process,
    or nproc under torch.distributed.run; on the CPU (`cpu`) with porter's stand-ins.

    Returns the stand-ins the run used. Raises a PorterError when it fails: an environment
    one (a missing package, a tree that needs CUDA: porter.treerun.failure) or the error of the
    module itself, quoting the traceback that the first failing rank wrote to
    <job folder>/out/*.error (the module's own, not the launcher's summary).
    """
    job_path = Path(job_path).resolve()
    folder = job_path.parent
    copy = scratch_copy(Path(tree), folder / "tree")
    report = folder / "standins.txt"
    report.unlink(missing_ok=True)
    run_env = environment(copy, nproc, cpu)
    if cpu:
        run_env.update(standins.environment(standins.offered(copy), report))
    run_env.update(env or {})
    entry = ["-m", "porter.treerun.standins.launch", "-m", module]  # stand-ins when cpu; a clean end
    if nproc == 1:
        cmd = [sys.executable, *entry, str(job_path)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", run_env["MASTER_PORT"], *entry, str(job_path)]
    for stale in folder.glob("out/*.error"):
        stale.unlink()
    remove_orphaned_shared_memory()
    proc = subprocess.Popen(cmd, cwd=copy, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **child_of_this_process())
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired as exc:
        stop_group(proc)
        raise PorterError(f"{module} ran past {timeout:.0f} s in the tree", construct=" ".join(cmd),
                          fix="see the log; a distributed run may be waiting on a rank that failed") from exc
    except BaseException:
        stop_group(proc)
        raise
    finally:
        remove_shared_memory(run_env)
    Path(log).write_text(" ".join(cmd) + "\n\n" + done.stdout + "\n" + done.stderr)
    if done.returncode != 0:
        raise _failure(done, folder, copy, Path(tree), Path(log), module, what)
    shutil.rmtree(copy, ignore_errors=True)
    return standins.read_used(report)


def _failure(done, folder: Path, copy: Path, tree: Path, log: Path, module: str, what: str) -> PorterError:
    """The PorterError of a failed run in the tree: its first failing rank's own error."""
    errors = sorted(folder.glob("out/*.error"), key=lambda p: p.stat().st_mtime)
    text = errors[0].read_text() if errors else without_launcher_summary(done.stderr + "\n" + done.stdout)
    failure = classify(text, [copy, tree]) or classify(done.stderr + "\n" + done.stdout, [copy, tree])
    if failure is not None and failure.is_environment:
        return failure.error(what, log)
    tail = in_tree_terms(text, copy, tree).strip().splitlines()
    where = f"{failure.where.file}:{failure.where.line}" if failure and failure.where else str(log)
    return PorterError(
        f"{what} failed inside the tree" + (f": {failure.exception}" if failure else ""),
        file=where, construct=f"python -m {module} in a scratch copy of {tree}",
        found="\n    ".join(tail[-12:]),
        fix=f"read the traceback above (the whole log: {log}); the line named is "
            + (_whose(failure, tree) or "the tree's own code or the port's") + ": fix it there, then run porter again",
    )


def _whose(failure, tree: Path) -> str:
    from porter.treerun.owner import described

    return described(tree, failure.where.file, failure.where.line) if failure and failure.where else ""


LAUNCHER_FAILED = re.compile(r"torch/distributed/elastic/.*failed \(exitcode|ChildFailedError")


def without_launcher_summary(log: str) -> str:
    """The output of the ranks, without torch.distributed.run's own report of their failure."""
    lines = log.splitlines()
    cut = next((i for i, line in enumerate(lines) if LAUNCHER_FAILED.search(line)), len(lines))
    return "\n".join(lines[:cut])
