"""Ctrl-C: a real SIGINT at each stage of `porter apply` leaves the tree whole (as it was, or
with the whole port) and the command says which, exit status 130.

The process signals itself at a chosen moment (while planning, between two renames, after the
last rename), as a user's Ctrl-C would reach it then; nothing of porter is replaced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from porter import interrupts
from porter.errors import PorterError
from porter.port import apply
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot

REPO = Path(__file__).resolve().parents[2]

# Runs porter's CLI with SIGINT as a terminal delivers it (KeyboardInterrupt), and presses
# Ctrl-C at the moment named by argv[1].
PRESS_CTRL_C = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import porter.port, porter.writer

def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)

moment, command = sys.argv[1], sys.argv[2:]
if moment == "planning":
    check_stable = porter.port.check_stable
    def planning(*args):
        ctrl_c()
        return check_stable(*args)
    porter.port.check_stable = planning
elif moment == "writing":
    replace, calls = os.replace, []
    def writing(*args):
        calls.append(args)
        if len(calls) == 6:
            ctrl_c()
        return replace(*args)
    os.replace = writing
elif moment == "written":
    fsync_dir = porter.writer._fsync_dir
    def written(folder):
        ctrl_c()
        return fsync_dir(folder)
    porter.writer._fsync_dir = written
from porter.cli import main
sys.argv = ["porter", *command]
main()
"""


@pytest.fixture(autouse=True)
def sigint_as_a_terminal_delivers_it():
    """Python's own SIGINT handler for each test, whatever this run started with (under nohup, or
    a runner that starts tests with SIGINT ignored, the tests here would otherwise see SIG_IGN)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _press(moment: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRESS_CTRL_C, moment, *command], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


@pytest.mark.parametrize("moment", ["planning", "writing"])
def test_ctrl_c_before_the_port_is_whole_writes_nothing_and_says_so(tree, moment):
    before = snapshot(tree)
    done = _press(moment, "apply", "llama", "--target", str(tree))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "porter: interrupted: nothing was written: the tree is as it was (porter writes all or nothing)")
    assert "Traceback" not in done.stderr
    assert not diff_snapshots(before, snapshot(tree))  # no temporary, no .porter/, no lock left


def test_ctrl_c_after_the_last_rename_says_the_port_is_whole(tree, tmp_path):
    expected = copy_sample(tmp_path / "expected")
    apply("llama", expected)
    done = _press("written", "apply", "llama", "--target", str(tree))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"porter: interrupted after the write: {tree} holds the whole change (porter writes all or nothing)")
    ported = {k: v for k, v in snapshot(tree).items() if k != ".porter/journal.json"}
    assert not diff_snapshots({k: v for k, v in snapshot(expected).items() if k != ".porter/journal.json"}, ported)


def test_ctrl_c_in_a_diff_says_it_writes_nothing(tree):
    before = snapshot(tree)
    done = _press("planning", "diff", "llama", "--target", str(tree))
    assert done.returncode == 130
    assert done.stderr.strip().splitlines()[-1] == "porter: interrupted: nothing was written (porter diff writes no file of the tree)"
    assert not diff_snapshots(before, snapshot(tree))


def _signal_at_rename(monkeypatch, number: int) -> None:
    real, calls = os.replace, []

    def replace(*args):
        calls.append(args)
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to this (the main) thread, as Ctrl-C is
        return real(*args)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("number", [1, 8, 15])
def test_a_real_sigint_between_renames_puts_every_file_back(tree, monkeypatch, number):
    before = snapshot(tree)
    _signal_at_rename(monkeypatch, number)
    written = len(interrupts.written)
    with pytest.raises(KeyboardInterrupt):
        apply("llama", tree)
    monkeypatch.undo()
    assert not diff_snapshots(before, snapshot(tree))
    assert len(interrupts.written) == written
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # porter's hold is lifted


def test_a_sigint_during_the_roll_back_does_not_cut_it_short(tree, monkeypatch):
    """A disk error at the 9th rename starts the roll-back; Ctrl-C pressed during it waits for it."""
    before = snapshot(tree)
    real, calls = os.replace, []

    def replace(*args):
        calls.append(args)
        if len(calls) == 9:
            raise OSError(28, "No space left on device")
        if len(calls) == 10:  # the roll-back's first put-back
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PorterError):
        apply("llama", tree)
    monkeypatch.undo()
    assert not diff_snapshots(before, snapshot(tree))


def test_these_tests_hold_when_started_with_sigint_ignored():
    """As under nohup: the process starts with SIGINT ignored (SIG_IGN), and the tests here set the
    disposition they need themselves."""
    code = ("import signal, sys, pytest\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "sys.exit(pytest.main(['-n', '0', '-q', '-p', 'no:cacheprovider', sys.argv[1], '-k', "
            "'between_renames and 8']))\n")
    done = subprocess.run([sys.executable, "-c", code, __file__], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed" in done.stdout
