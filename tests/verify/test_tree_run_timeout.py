"""A run in the tree that outlives its timeout takes all its ranks with it: none is left orphaned,
holding CPU or a DeepSpeed build lock (torch.distributed.run starts each rank in a session of
its own)."""

import os
import time

import pytest

from porter.errors import PorterError
from porter.treerun.in_tree import run_in_tree

SLEEPER = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1]).with_name(f"pid-{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
print("sleeping", flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent counts as gone
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return True


def test_every_rank_goes_when_the_run_times_out(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "sleeper.py").write_text(SLEEPER)
    job = tmp_path / "job" / "job.json"
    job.parent.mkdir()
    job.write_text("{}")
    with pytest.raises(PorterError) as caught:
        run_in_tree(tree, "sleeper", job, 2, tmp_path / "run.log", timeout=12, what="sleeping")
    assert "ran past 12 s" in caught.value.message
    pids = [int(p.read_text()) for p in job.parent.glob("pid-*")]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)]
