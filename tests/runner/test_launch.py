"""porter.treerun.script.launch: a run that runs past its time is stopped with every process it started."""

from __future__ import annotations

import os
import textwrap
import time

from porter.treerun.script import launch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is not alive
        return handle.read().split()[2] != "Z"


def test_a_run_past_its_timeout_is_stopped_with_its_children(tmp_path):
    (tmp_path / "megatron").mkdir()
    (tmp_path / "script.py").write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(tmp_path / "child.pid")!r}, "w").write(str(child.pid))
        print("iteration 1/2 | lm loss: 6.5E+00 |", flush=True)
        time.sleep(300)
    """))
    start = time.monotonic()
    run = launch(tmp_path, "script.py", [], timeout=5)
    assert time.monotonic() - start < 60
    assert run.losses == {1: 6.5}
    assert "porter: killed after 5 s" in run.log
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)  # torchrun's ranks would be such children
