"""apex's multi-tensor kernels (`multi_tensor_applier`, `amp_C`), imported by trees at start-up.

megatron/utils.py (BigScience's unconditionally, microsoft's in a try that sets a flag) and
megatron/optimizer/clip_grads.py import `from apex.multi_tensor_apply import multi_tensor_applier`
and `amp_C` to compute gradient and parameter norms and to scale tensors in groups. Where they
are missing, the stand-in computes the same in plain torch: `multi_tensor_applier(op,
overflow_buffer, tensor_lists, *args)` calls `op(chunk_size, overflow_buffer, tensor_lists, *args)`
as apex's does; `amp_C.multi_tensor_l2norm` returns the L2 norm of the tensors (and each one's,
on request) in fp32, `amp_C.multi_tensor_scale` writes src * scale into dst and flags a
non-finite value in the overflow buffer.
"""

from __future__ import annotations

from pathlib import Path

NAME = "amp_C"
WHAT = ("apex.multi_tensor_apply.multi_tensor_applier and amp_C (CUDA-only): the same norms and scaling in "
        "plain torch")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "import amp_C", "apex.multi_tensor_apply")


def multi_tensor_apply(name: str):
    from porter.treerun.standins.runtime import ReportingModule

    class MultiTensorApply:
        available = True
        warned = False

        def __init__(self, chunk_size: int) -> None:
            self.chunk_size = chunk_size

        def __call__(self, op, noop_flag_buffer, tensor_lists, *args):
            return op(self.chunk_size, noop_flag_buffer, tensor_lists, *args)

    return ReportingModule(name, NAME, {"MultiTensorApply": MultiTensorApply,
                                        "multi_tensor_applier": MultiTensorApply(2048 * 32)})


def amp_c(name: str):
    import torch

    from porter.treerun.standins.runtime import ReportingModule

    def multi_tensor_l2norm(chunk_size, noop_flag, tensor_lists, per_tensor=False):
        (tensors,) = tensor_lists
        norms = [t.detach().float().norm(2) for t in tensors]
        total = torch.stack(norms).norm(2).reshape(1) if norms else torch.zeros(1)
        return total, (torch.stack(norms) if per_tensor and norms else torch.empty(0))

    def multi_tensor_scale(chunk_size, noop_flag, tensor_lists, scale):
        sources, targets = tensor_lists
        with torch.no_grad():
            for source, target in zip(sources, targets, strict=True):
                if not torch.isfinite(source).all():
                    noop_flag.fill_(1)
                target.copy_(source * scale)

    return ReportingModule(name, NAME, {"multi_tensor_l2norm": multi_tensor_l2norm,
                                        "multi_tensor_scale": multi_tensor_scale})


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("apex", None, module)
    hooks.missing("apex.multi_tensor_apply", None, multi_tensor_apply)
    hooks.missing("amp_C", None, amp_c)
