"""Where a run of the tree computes: the CPU, with porter's stand-ins, or this machine's CUDA device."""

from __future__ import annotations

from porter.errors import PorterError


def runs_on_cpu(cpu: bool | None) -> bool:
    """--cpu / --no-cpu, or (None) on the CPU when this machine has no CUDA device."""
    if cpu is True:
        return True
    import torch

    if cpu is False and not torch.cuda.is_available():
        raise PorterError("--no-cpu runs the tree on this machine's CUDA device, and it has none",
                          construct="a CUDA device torch can see", found="torch.cuda.is_available() is False",
                          fix="leave out --no-cpu (the run then uses the CPU, with porter's stand-ins)")
    return cpu is None and not torch.cuda.is_available()
