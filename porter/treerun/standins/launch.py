"""`python -m porter.treerun.standins.launch SCRIPT ARGS...` (or `-m MODULE ARGS...`): a run with the stand-ins.

porter starts what it runs in a tree through this module (under torch.distributed.run with
`-m porter.treerun.standins.launch`): it installs the stand-ins named in PORTER_STANDINS, then runs
SCRIPT (or MODULE) as `__main__`, with sys.argv and sys.path as `python SCRIPT ARGS` (or
`python -m MODULE ARGS`) would have them. When it returns, the run ends cleanly: the
process group is destroyed before the interpreter shuts down (threads of gloo and DeepSpeed
left to their destructors can abort a finished run at exit).
"""

from __future__ import annotations

import os
import runpy
import sys


def main(argv: list[str]) -> None:
    from porter.treerun.process import die_with_parent
    from porter.treerun.standins.runtime import install_from_environment

    die_with_parent()  # a rank of torch.distributed.run ends with it, even when it is killed outright
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        raise SystemExit("usage: python -m porter.treerun.standins.launch SCRIPT [ARGS...] | -m MODULE [ARGS...]")
    install_from_environment()
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            return
        script = os.path.abspath(argv[0])
        sys.argv = [argv[0], *argv[1:]]
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")
    finally:
        end_cleanly()


def end_cleanly() -> None:
    """Destroy the run's process group, if it made one and left it (the trees' pretrain() does)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return
    try:
        distributed.destroy_process_group()
    except Exception:  # a run that failed may leave a group that cannot be torn down: its own error stands
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
