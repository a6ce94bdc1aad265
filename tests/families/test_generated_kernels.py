"""The generated shared modules' hand-written gradients (generated/: rmsnorm.py, grouped_attention.py)
against autograd through the plain math they replace, in fp32 and bf16."""

import importlib.util
from pathlib import Path

import pytest
import torch

GENERATED = Path(__file__).resolve().parents[2] / "generated"


def generated(family, name):
    path = GENERATED / family / "megatron" / "model" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{family}_generated_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grads(fn, *inputs):
    """fn's output and the gradients of every input, for one fixed random output gradient."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype))
    return out.detach(), *(t.grad for t in inputs)


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_backward_is_autograds_through_the_reference(dtype, offset):
    rmsnorm = generated("gemma", "rmsnorm")
    assert rmsnorm.rms_norm_kernel("cpu").startswith("RMSNormFunction")
    torch.manual_seed(0)
    norm = rmsnorm.RMSNorm(64, eps=1e-6, offset=offset).to(dtype)
    with torch.no_grad():
        norm.weight.add_(torch.randn(64) * 0.3)
    x = (torch.randn(3, 5, 64) * 2).to(dtype)
    weight = norm.weight.detach()

    def reference(x, w):
        return rmsnorm.rms_norm_reference(x, w.float() + offset if offset else w, 1e-6)

    want = grads(reference, x, weight)
    x_leaf = x.clone().requires_grad_()
    out = norm(x_leaf)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype))
    got = (out.detach(), x_leaf.grad, norm.weight.grad)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2

    def close(a, b):
        return (a.float() - b.float()).abs().max().item() <= tolerance * max(1.0, b.float().abs().max().item())

    for name, a, b in zip(("output", "dx", "dweight"), got, want, strict=True):
        assert close(a, b), name
    # the comparison can fail: another function's gradient is told apart
    wrong = grads(lambda x, w: reference(x, w) * 1.1, x, weight)
    assert not close(wrong[1], want[1]) and not close(wrong[2], want[2])


def test_rmsnorm_backward_of_a_transposed_input():
    """A norm after the transpose to [s, b, h] may see a non-contiguous x."""
    rmsnorm = generated("llama3", "rmsnorm")
    torch.manual_seed(0)
    norm = rmsnorm.RMSNorm(32, eps=1e-5, offset=0.0)
    with torch.no_grad():
        norm.weight.add_(torch.randn(32) * 0.3)
    x = torch.randn(4, 6, 32).transpose(0, 1)
    weight = norm.weight.detach()
    want = grads(lambda x, w: rmsnorm.rms_norm_reference(x, w, 1e-5), x, weight)
    got = grads(lambda x, w: rmsnorm.RMSNormFunction.apply(x, w, 1e-5), x, weight)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_grouped_split_backward_is_the_slices_backward(groups):
    grouped_attention = generated("llama3", "grouped_attention")
    heads, hn, s, b = 8, 4, 5, 3
    torch.manual_seed(0)
    mixed = torch.randn(s, b, groups * (heads // groups + 2) * hn)

    def by_slices(mixed):
        grouped = mixed.view(s, b, groups, heads // groups + 2, hn)
        query = grouped[:, :, :, :-2, :].reshape(s, b, heads, hn)
        return torch.cat([query, grouped[:, :, :, -2, :], grouped[:, :, :, -1, :]], dim=2)

    def by_split(mixed):
        query, key, value = grouped_attention.split_query_key_value(mixed, groups, hn)
        assert query.shape == (s, b, heads, hn) and key.shape == value.shape == (s, b, groups, hn)
        return torch.cat([query, key, value], dim=2)

    want, got = grads(by_slices, mixed), grads(by_split, mixed)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_rmsnorm_backward_of_a_strided_output_gradient():
    """A norm whose output is transposed after it (OLMo-2's norm after attention) gets a strided
    gradient: the backward takes it as it comes (a view of it failed in bench/model.py)."""
    rmsnorm = generated("olmo2", "rmsnorm")
    torch.manual_seed(0)
    x = torch.randn(6, 4, 32).transpose(0, 1)
    weight = torch.rand(32) + 0.5
    gradient = torch.randn(6, 4, 32).transpose(0, 1)

    def run(fn):
        xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
        fn(xs, ws).backward(gradient)
        return xs.grad, ws.grad

    want = run(lambda a, w: rmsnorm.rms_norm_reference(a, w, 1e-5))
    got = run(lambda a, w: rmsnorm.RMSNormFunction.apply(a, w, 1e-5))
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
