"""A CPU case for a tree's get_current_device() that knows only HPU and CUDA (Habana's).

Habana's megatron/global_vars.py returns "hpu:<n>" or "cuda:<n>" from get_current_device()
and get_current_device_index(); on CPU the CUDA branch fails ("Torch not compiled with CUDA
enabled"). The stand-in answers "cpu" and 0 when the run's device is the CPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

NAME = "current device"
WHAT = "the tree's get_current_device() / get_current_device_index() (HPU and CUDA cases only): 'cpu' and 0 on a CPU run"


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "def get_current_device")


def _cpu_case(function, answer):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from megatron import get_args

        device = getattr(get_args(), "device", None)
        if getattr(device, "type", device) == "cpu":
            from porter.treerun.standins.runtime import used

            used(NAME)
            return answer
        return function(*args, **kwargs)

    return wrapper


def _patch(global_vars) -> None:
    for name, answer in (("get_current_device", "cpu"), ("get_current_device_index", 0)):
        function = getattr(global_vars, name, None)
        if function is not None:
            setattr(global_vars, name, _cpu_case(function, answer))


def install(hooks) -> None:
    hooks.after("megatron.global_vars", _patch)
