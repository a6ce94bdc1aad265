"""The JIT fusion warm-up, which some trees run on CUDA tensors at start-up without a device check.

microsoft 9e72d571's `set_jit_fusion_options()` ends with `_warmup_jit_function()`, which makes
its warm-up inputs with `device='cuda'`, on every machine. The warm-up only compiles the fused
bias-GeLU and bias-dropout-add kernels before the first step; it computes nothing the run
keeps. On a machine without CUDA the stand-in skips it; with CUDA the tree's own runs.
"""

from __future__ import annotations

from pathlib import Path

NAME = "JIT warm-up"
WHAT = ("megatron.initialize._warmup_jit_function (makes its inputs on device='cuda'): skipped without CUDA; "
        "it only compiles fused kernels ahead of the first step")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "def _warmup_jit_function")


def install(hooks) -> None:
    def patch(initialize) -> None:
        warmup = getattr(initialize, "_warmup_jit_function", None)
        if warmup is None:
            return

        def warmup_where_cuda(*args, **kwargs):
            import torch

            if torch.cuda.is_available():
                return warmup(*args, **kwargs)
            from porter.treerun.standins.runtime import used

            used(NAME)
            return None

        initialize._warmup_jit_function = warmup_where_cuda

    hooks.after("megatron.initialize", patch)
