"""The generated shared modules Gemma uses (generated/gemma: rmsnorm.py, swiglu.py) against HF's Gemma
modules in bf16 and fp32: the (1 + w) scale formed in fp32, the tanh GELU on the gate."""

import importlib.util
from pathlib import Path

import pytest
import torch

GENERATED = Path(__file__).resolve().parents[2] / "generated" / "gemma" / "megatron" / "model"


def generated(name):
    spec = importlib.util.spec_from_file_location(f"gemma_generated_{name}", GENERATED / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_with_the_unit_offset_is_hfs_gemma_rmsnorm(dtype):
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    torch.manual_seed(0)
    ours, theirs = generated("rmsnorm").RMSNorm(64, eps=1e-6, offset=1.0), GemmaRMSNorm(64, eps=1e-6)
    assert torch.equal(ours.weight, theirs.weight) and not ours.weight.any()  # w = 0: the identity scale
    with torch.no_grad():
        weight = torch.randn(64) * 0.3
        ours.weight.copy_(weight)
        theirs.weight.copy_(weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (torch.randn(2, 8, 64) * 3).to(dtype)
    assert torch.equal(ours(x), theirs(x))
    # without the offset the same weights give another function: the test can tell them apart
    assert not torch.equal(generated("rmsnorm").RMSNorm(64, eps=1e-6, offset=0.0).to(dtype)(x), theirs(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_geglu_is_hfs_gemma_mlp_activation(dtype):
    from transformers.activations import ACT2FN

    torch.manual_seed(0)
    gate, up = (torch.randn(2, 8, 96) * 3).to(dtype), (torch.randn(2, 8, 96) * 3).to(dtype)
    fused = torch.cat((gate, up), dim=-1)
    mine = generated("swiglu").geglu(fused)
    assert torch.allclose(mine.float(), (ACT2FN["gelu_pytorch_tanh"](gate) * up).float(), rtol=0, atol=0)
    erf = (ACT2FN["gelu"](gate) * up).float()
    assert (mine.float() - erf).abs().max() > 1e-4  # the exact GELU is another function
