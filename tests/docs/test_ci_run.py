""".ci/run runs the README's test command, exactly as written.

The real run makes a venv and installs everything (minutes, and the network); here `python3`
on the PATH is a stand-in that records how it is called and makes a venv of stand-ins that do
the same, so what is checked is .ci/run itself: that it finds the README's command and runs it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.docs.runner import REPO
from tests.docs.test_docs import setup_commands

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  for tool in pip python porter; do cp "$0" "$3/bin/$tool"; done
fi
"""


def test_ci_run_runs_the_readmes_test_command(tmp_path: Path):
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", checkout / ".ci" / "run")
    shutil.copy(REPO / "README.md", checkout / "README.md")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(RECORDER)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls)}
    done = subprocess.run(["bash", ".ci/run"], cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    test_command = setup_commands()[1]
    assert done.stdout.splitlines()[0] == f"+ {test_command}"
    assert calls.read_text().splitlines() == [
        "python3 -m venv .venv",
        "pip install torch==2.13.0 .[all]",
        "python -m pytest",
    ]
