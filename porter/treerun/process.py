"""A run's process: its environment, and its end (every process it started, its shared memory).

Each run of a tree's code (porter.treerun.script, porter.treerun.in_tree) is a process group of
its own, with the tree first on PYTHONPATH and DeepSpeed on the CPU unless told otherwise.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue

import porter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(tree: Path, nproc: int = 1, cpu: bool = True) -> dict[str, str]:
    """The environment of a run of the tree: its folder on PYTHONPATH; DeepSpeed on the CPU
    (CUDA hidden) unless `cpu` is False (then the machine's CUDA devices, as the tree finds them)."""
    env = dict(os.environ)
    path = [str(tree), *_porter_path()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    cache = env.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "torch_extensions")
    env.update(
        # the tree's own build steps (e.g. `python3 -m pybind11` in megatron/data/Makefile) must find this Python
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(path),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))),
        PYTHONUNBUFFERED="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        # DeepSpeed's CPU accelerator counts one device per NUMA node unless LOCAL_SIZE says
        # how many there are; trees check local rank == rank % device count.
        LOCAL_SIZE=str(nproc),
        # DeepSpeed JIT-builds a shared-memory op on CPU (~30 s of a core): built once per Python
        # environment (their include paths differ, and would invalidate each other's build in a
        # shared cache), whatever the number of processes (the build is the same)
        TORCH_EXTENSIONS_DIR=str(Path(cache) / f"porter-{_environment_tag()}"),
        # what the trees' own launch scripts export: microsoft's 2023 validate_args refuses to start
        # without it (async tensor-parallel all-reduce); it changes nothing on a CPU
        CUDA_DEVICE_MAX_CONNECTIONS=env.get("CUDA_DEVICE_MAX_CONNECTIONS", "1"),
    )
    if cpu:
        env.update(DS_ACCELERATOR=env.get("DS_ACCELERATOR", "cpu"), CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""))
    if nproc == 1:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    return env


def _environment_tag() -> str:
    """A short name for this Python environment (its prefix)."""
    return hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]


def _porter_path() -> list[str]:
    """Where porter's package lies, when the run's Python would not find it by itself (a checkout)."""
    root = Path(porter.__file__).resolve().parent.parent
    return [] if root.name in ("site-packages", "dist-packages") else [str(root)]


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Make this process end when the one that started it ends, however that ends (a porter
    killed outright cannot stop its runs itself). Linux only; elsewhere nothing is done."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the call took effect
        os._exit(1)


def child_of_this_process() -> dict:
    """Popen keywords for a run that ends with porter: its own session (a timeout or Ctrl-C
    stops all of it), and killed when porter is."""
    return {"start_new_session": True, "preexec_fn": die_with_parent}


def output_lines(proc: subprocess.Popen, deadline: float | None):
    """The lines of proc's output as they come; None once the deadline passes (even while it is silent)."""
    assert proc.stdout is not None
    if deadline is None:
        yield from proc.stdout
        return
    queue: Queue = Queue()

    def read() -> None:
        for line in proc.stdout:
            queue.put(line)
        queue.put("")  # end of output

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            line = queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except Empty:
            yield None
            return
        if line == "":
            return
        yield line


def stop_group(proc: subprocess.Popen) -> None:
    """Kill a run started in a session of its own, with every process it started (torchrun's ranks,
    which torchrun starts in sessions of their own: found by parent, not by group)."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def descendants(pid: int) -> list[int]:
    """The processes below pid, from /proc (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def remove_shared_memory(env: dict[str, str]) -> None:
    """Delete the shared-memory buffers DeepSpeed's CPU backend left behind for a finished run.

    Its shm allreduce creates one buffer per rank in /dev/shm, named after the user, MASTER_ADDR
    and MASTER_PORT, and never unlinks it (about 66 MB each): without this, a test session of
    many runs fills the machine's memory.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or not hasattr(os, "getuid"):
        return
    for path in shm.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_{env['MASTER_ADDR']}_{env['MASTER_PORT']}_*"):
        path.unlink(missing_ok=True)


def remove_orphaned_shared_memory(older_than: float = 120.0) -> list[Path]:
    """Delete this user's DeepSpeed shared-memory buffers that no process maps any more and
    that are older than `older_than` seconds: those of runs that were killed outright (their
    porter could not remove them). Returns the buffers deleted."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not hasattr(os, "getuid"):
        return []
    now = time.time()
    old = [p for p in shm.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*")
           if now - p.stat().st_mtime > older_than]
    if not old:
        return []
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.split(None, 5)[-1].strip() for line in maps.read_text().splitlines()
                          if "/dev/shm/deepspeed_allreduce_buffer_" in line)
        except OSError:
            continue
    removed = [p for p in old if str(p) not in mapped]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
