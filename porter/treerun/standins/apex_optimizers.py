"""apex's fused optimizers (FusedAdam, FusedSGD), which many trees import at start-up.

microsoft's 2023 trees import `from apex.optimizers import FusedAdam as Adam` unconditionally in
megatron/optimizer/distrib_optimizer.py, BigScience's in megatron/optimizer/__init__.py; apex is
built with CUDA extensions, so a CPU machine has none. Where apex is missing, the stand-in
serves torch's own optimizers under apex's names and arguments: FusedAdam is torch.optim.Adam,
with decoupled weight decay (AdamW) when apex's `adam_w_mode` is on (its default), L2 otherwise,
bias-corrected as apex's default; FusedSGD is torch.optim.SGD. An argument torch cannot honour
(apex's `bias_correction=False`, `wd_after_momentum=True`) fails loudly.
"""

from __future__ import annotations

from pathlib import Path

NAME = "apex.optimizers"
WHAT = ("apex.optimizers (CUDA-only): FusedAdam as torch.optim.Adam (AdamW in apex's adam_w_mode), "
        "FusedSGD as torch.optim.SGD, same arguments")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "apex.optimizers")


def optimizers(name: str):
    import torch

    from porter.treerun.standins.runtime import ReportingModule

    class FusedAdam(torch.optim.Adam):
        """apex.optimizers.FusedAdam's arguments, torch's Adam."""

        def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8, adam_w_mode=True,
                     weight_decay=0.0, amsgrad=False, set_grad_none=True, capturable=False, master_weights=False):
            if not bias_correction:
                raise NotImplementedError("porter's FusedAdam stand-in corrects the moments' bias, as torch's Adam "
                                          "does: bias_correction=False needs apex itself (a CUDA machine)")
            super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                             decoupled_weight_decay=adam_w_mode)
            self.adam_w_mode = adam_w_mode
            self.set_grad_none = set_grad_none

        def zero_grad(self, set_to_none=None):
            super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

    class FusedSGD(torch.optim.SGD):
        """apex.optimizers.FusedSGD's arguments, torch's SGD."""

        def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     wd_after_momentum=False, materialize_master_grads=True, set_grad_none=False):
            if wd_after_momentum:
                raise NotImplementedError("porter's FusedSGD stand-in applies weight decay before momentum, as "
                                          "torch's SGD does: wd_after_momentum=True needs apex itself")
            super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                             nesterov=nesterov)

    return ReportingModule(name, NAME, {"FusedAdam": FusedAdam, "FusedSGD": FusedSGD})


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("apex", None, module)
    hooks.missing("apex.optimizers", None, optimizers)
