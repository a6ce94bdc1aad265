"""DeepSpeed's CPU accelerator's current_device(), which a tree passes to torch as a device.

Trees written for DeepSpeed's accelerator API make tensors with
`device=get_accelerator().current_device()` (microsoft 9e72d571's timers, its pipeline's
p2p buffers). On CUDA that is the device's index, which torch takes as a device. DeepSpeed's
CPU accelerator returns the LOCAL_RANK environment variable instead (the string '0'), and
torch refuses it: "Invalid device string: '0'". The stand-in makes current_device() answer
torch.device('cpu'), which torch takes wherever the CUDA index goes (as a device, and as the
index DeepSpeed's CPU generator ignores).
"""

from __future__ import annotations

from pathlib import Path

NAME = "DeepSpeed CPU current_device()"
WHAT = ("DeepSpeed's CPU accelerator current_device() (returns LOCAL_RANK, a string torch refuses as a device): "
        "torch.device('cpu'), as the tree's device=get_accelerator().current_device() expects")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "get_accelerator().current_device()")


def _cpu_device(self):
    import torch

    from porter.treerun.standins.runtime import used

    used(NAME)
    return torch.device("cpu")


def _patch(cpu_accelerator) -> None:
    accelerator = getattr(cpu_accelerator, "CPU_Accelerator", None)
    if accelerator is not None:
        accelerator.current_device = _cpu_device


def install(hooks) -> None:
    hooks.after("deepspeed.accelerator.cpu_accelerator", _patch)
