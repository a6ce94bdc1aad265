"""A run killed outright (SIGKILL: no handler runs) heals: the next command works.

`porter apply` and `porter revert` are killed at a random moment and between two renames of
their transaction; the next command takes the lock the dead run left (an flock ends with its
process), puts back what that run had begun to write, and does its own work: the tree ends
exactly as a run that was never killed leaves it. A `porter smoke` killed while it prepares
its run leaves no process behind, and the tree it was given is unlocked and unchanged.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from porter.port import apply
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot

REPO = Path(__file__).resolve().parents[2]

# porter's CLI, killing itself (SIGKILL) at the n-th os.replace of its transaction (argv[1]; 0: never)
KILL_AT_RENAME = """
import os, signal, sys
n, command = int(sys.argv[1]), sys.argv[2:]
replace, calls = os.replace, []
def replace_then_die(*args):
    calls.append(args)
    if len(calls) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(*args)
os.replace = replace_then_die
from porter.cli import main
sys.argv = ["porter", *command]
main()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def porter(*args: str, kill_at_rename: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(kill_at_rename), *args], capture_output=True,
                          text=True, env=_env(), timeout=300)


def killed_at_random(seconds: float, *args: str) -> None:
    """Start porter, SIGKILL it after `seconds`, wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "porter", *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    proc.kill()
    proc.wait()


def without_journal(shot: dict) -> dict:
    return {k: v for k, v in shot.items() if k != ".porter/journal.json"}


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict:
    """The sample tree after one apply that nobody killed."""
    tree = copy_sample(tmp_path_factory.mktemp("expected") / "tree")
    apply("llama", tree)
    return without_journal(snapshot(tree))


def test_apply_then_revert_killed_between_renames_then_run_again(tmp_path, expected):
    tree = copy_sample(tmp_path / "tree")
    original = snapshot(tree)
    # rename 1 is the transaction's record, 2 the journal; 5 is in the middle of the tree's files
    killed = porter("apply", "llama", "--target", str(tree), kill_at_rename=5)
    assert killed.returncode == -signal.SIGKILL
    assert (tree / ".porter/pending.json").exists() and (tree / ".porter/lock").exists()
    again = porter("apply", "llama", "--target", str(tree))
    assert again.returncode == 0, again.stderr
    assert not diff_snapshots(expected, without_journal(snapshot(tree)))
    ported = snapshot(tree)
    killed = porter("revert", "--target", str(tree), kill_at_rename=4)
    assert killed.returncode == -signal.SIGKILL
    assert diff_snapshots(ported, snapshot(tree))  # half reverted, its record left
    reverted = porter("revert", "--target", str(tree))  # puts the port back whole first, then reverts it
    assert reverted.returncode == 0, reverted.stderr
    assert not diff_snapshots(original, snapshot(tree))


def test_apply_and_revert_killed_at_random_moments(tmp_path, expected):
    rng = random.Random(os.getpid())
    tree = copy_sample(tmp_path / "tree")
    original = snapshot(tree)
    killed_at_random(rng.uniform(0.2, 3.0), "apply", "llama", "--target", str(tree))
    again = porter("apply", "llama", "--target", str(tree))
    assert again.returncode == 0, again.stderr
    assert not diff_snapshots(expected, without_journal(snapshot(tree)))
    killed_at_random(rng.uniform(0.2, 3.0), "revert", "--target", str(tree))
    reverted = porter("revert", "--target", str(tree))
    # the killed revert may have finished: then there is nothing left to revert
    assert reverted.returncode == 0 or "nothing to revert" in reverted.stderr, reverted.stderr
    assert not diff_snapshots(original, snapshot(tree))


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = set(), list(children.get(pid, []))
    while queue:
        child = queue.pop()
        found.add(child)
        queue.extend(children.get(child, []))
    return found


def _running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_a_killed_smoke_leaves_no_process_and_the_tree_free(tmp_path, ported_tree_copy):
    tree = ported_tree_copy
    before = snapshot(tree)
    proc = subprocess.Popen([sys.executable, "-m", "porter", "smoke", "llama", "--target", str(tree), "--workdir",
                             str(tmp_path / "smoke")], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    children: set[int] = set()
    deadline = time.monotonic() + 60
    while not children and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # until the run has started a process of its own (the dataset build, the training)
        children = _descendants(proc.pid)
    assert children, "porter smoke started no process"
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.5))
    children |= _descendants(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _running(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(children)
    assert not diff_snapshots(before, snapshot(tree))
    again = porter("apply", "llama", "--target", str(tree))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


@pytest.fixture
def ported_tree_copy(tmp_path):
    tree = copy_sample(tmp_path / "ported")
    apply("llama", tree)
    return tree
