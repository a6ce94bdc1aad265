"""apex's fused norms, which trees import at start-up (microsoft 69e3c6a0's transformer.py and
gpt_model.py: `from apex.normalization import MixedFusedRMSNorm`, unconditionally).

Where apex is missing, the stand-in serves torch modules with apex's names, arguments and
parameters (`weight`, and `bias` for the LayerNorms): FusedLayerNorm and MixedFusedLayerNorm
are torch.nn.LayerNorm; FusedRMSNorm and MixedFusedRMSNorm normalise in fp32 by the root mean
square (x / sqrt(mean(x^2) + eps)) and scale by the weight, as HF's LlamaRMSNorm does; and
apex.normalization.fused_layer_norm's autograd functions compute the same with torch.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

NAME = "apex.normalization"
WHAT = ("apex.normalization (CUDA-only): FusedLayerNorm/MixedFusedLayerNorm as torch.nn.LayerNorm, "
        "FusedRMSNorm/MixedFusedRMSNorm as an RMSNorm in torch, same parameters")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "apex.normalization")


@lru_cache(maxsize=1)
def _classes() -> dict:
    import torch

    def rms_norm(x, weight, eps):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
        return normed.to(x.dtype) if weight is None else weight * normed.to(x.dtype)

    class FusedLayerNorm(torch.nn.LayerNorm):
        def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, **_cuda_options):
            super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)

    class FusedRMSNorm(torch.nn.Module):
        def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, **_cuda_options):
            super().__init__()
            self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
                tuple(normalized_shape)
            self.eps = eps
            self.elementwise_affine = elementwise_affine
            self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None

        def forward(self, x):
            return rms_norm(x, self.weight, self.eps)

    class FusedLayerNormAffineFunction:
        @staticmethod
        def apply(x, weight, bias, normalized_shape, eps, *_memory_efficient):
            return torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)

    class FusedRMSNormAffineFunction:
        @staticmethod
        def apply(x, weight, normalized_shape, eps, *_memory_efficient):
            return rms_norm(x, weight, eps)

    return {"FusedLayerNorm": FusedLayerNorm, "MixedFusedLayerNorm": type("MixedFusedLayerNorm", (FusedLayerNorm,), {}),
            "FusedRMSNorm": FusedRMSNorm, "MixedFusedRMSNorm": type("MixedFusedRMSNorm", (FusedRMSNorm,), {}),
            "FusedLayerNormAffineFunction": FusedLayerNormAffineFunction,
            "FusedRMSNormAffineFunction": FusedRMSNormAffineFunction}


def normalization(name: str):
    from porter.treerun.standins.runtime import ReportingModule

    return ReportingModule(name, NAME, _classes())


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("apex", None, module)
    hooks.missing("apex.normalization", None, normalization)
    hooks.missing("apex.normalization.fused_layer_norm", None, normalization)
