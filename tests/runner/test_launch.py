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


def _script(tmp_path, body: str) -> None:
    (tmp_path / "script.py").write_text(textwrap.dedent(body))


def test_a_run_that_aborts_at_exit_after_its_last_step_trained(tmp_path):
    """Issue 22 item 6: every loss logged, then "terminate called without an active exception"
    (a C++ abort as threads are torn down): the training is complete, and a warning says how it ended."""
    _script(tmp_path, """
        import os, sys
        for step in (1, 2, 3):
            print(f"iteration {step}/3 | lm loss: {7 - step}.0E+00 |", flush=True)
        print("terminate called without an active exception", file=sys.stderr, flush=True)
        os.abort()
    """)
    run = launch(tmp_path, "script.py", [])
    assert run.returncode != 0 and run.losses == {1: 6.0, 2: 5.0, 3: 4.0}
    warning = run.ended_after_training(3)
    assert warning and "logged all 3 steps" in warning and "terminate called" in warning
    assert run.ended_after_training(4) is None  # a step missing: not done


def test_an_error_after_the_last_step_is_a_failure(tmp_path):
    _script(tmp_path, """
        print("iteration 1/1 | lm loss: 6.0E+00 |", flush=True)
        raise RuntimeError("saving the checkpoint failed")
    """)
    run = launch(tmp_path, "script.py", [])
    assert run.returncode != 0 and run.ended_after_training(1) is None


def test_the_smoke_result_of_a_run_that_ended_after_training_passes_with_its_warning():
    from porter.smoke import SmokeResult

    losses = [7.0 - 0.1 * i for i in range(10)]
    ok = SmokeResult(losses, [], "", 1.0, -6, exit_warning="the training run logged all 10 steps, then ...")
    assert ok.passed and ok.as_dict()["exit_warning"].startswith("the training run logged all 10")
    assert not SmokeResult(losses, [], "", 1.0, -6).passed


def test_the_launcher_ends_the_run_cleanly(tmp_path):
    """A script that leaves its process group (as the trees' pretrain() does): porter's launcher
    destroys it before the interpreter shuts down."""
    _script(tmp_path, """
        import atexit
        import torch.distributed as dist
        dist.init_process_group("gloo", rank=0, world_size=1)
        atexit.register(lambda: print("GROUP AT EXIT", dist.is_initialized(), flush=True))
        print("iteration 1/1 | lm loss: 6.0E+00 |", flush=True)
    """)
    run = launch(tmp_path, "script.py", [])
    assert run.returncode == 0, run.log
    assert "GROUP AT EXIT False" in run.log
