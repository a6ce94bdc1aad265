"""Run by test_qk_norm.py under torch.distributed.run (2 ranks, gloo): porter's generated query/key
norm (generated/qwen3's qk_norm.py) at TP=2, each rank holding half the heads, against HF's own
norms on the whole tensors: Qwen3RMSNorm (per head), Gemma3RMSNorm (per head, 1 + w) and
Olmo2RMSNorm (over the whole projection). Forward values, the input's gradient and the weight's
gradient. Prints QKNORM-OK <rank>."""

import argparse
import importlib.util
import sys

import torch

sys.path.insert(0, sys.argv[1])  # the sample tree: its megatron.mpu is the tensor-parallel state

import megatron.global_vars as global_vars  # noqa: E402
from megatron import mpu  # noqa: E402

TP, S, B, HEADS, GROUPS, HN = 2, 5, 3, 4, 2, 8


def generated_qk_norm():
    spec = importlib.util.spec_from_file_location("generated_qk_norm", sys.argv[2])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same(ours, theirs, what):
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), f"{what}: max diff {(ours - theirs).abs().max().item()}"


def check(norm, reference, heads, whole, rank, what):
    """norm (this rank's) and reference (HF's, whole) on x [S, B, heads, HN]: rank r holds heads r * heads/TP...."""
    x = torch.randn(S, B, heads, HN)
    grad = torch.randn(S, B, heads, HN)
    local = slice(rank * heads // TP, (rank + 1) * heads // TP)
    with torch.no_grad():
        weight = torch.rand(reference.weight.shape) + 0.5
        reference.weight.copy_(weight)
        norm.weight.copy_(weight.view(heads, HN)[local].reshape(-1) if whole else weight)
    full = x.clone().requires_grad_()
    out = reference(full.flatten(2)).view_as(x) if whole else reference(full)
    (out * grad).sum().backward()
    mine = x[:, :, local].clone().requires_grad_()
    ours = norm(mine)
    (ours * grad[:, :, local]).sum().backward()
    same(ours, out[:, :, local].detach(), f"{what}: output")
    same(mine.grad, full.grad[:, :, local], f"{what}: gradient of the input")
    expected = reference.weight.grad.view(heads, HN)[local].reshape(-1) if whole else reference.weight.grad
    same(norm.weight.grad, expected, f"{what}: gradient of the weight")
    if not whole:  # the ranks' copies of the weight get the same gradient: they stay equal
        copies = [torch.empty_like(norm.weight.grad) for _ in range(TP)]
        torch.distributed.all_gather(copies, norm.weight.grad, group=mpu.get_tensor_model_parallel_group())
        assert torch.equal(copies[0], copies[1]), what


def main():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    torch.distributed.init_process_group("gloo")
    global_vars._GLOBAL_ARGS = argparse.Namespace(use_cpu_initialization=True, params_dtype=torch.float32,
                                                  rmsnorm_weight_offset=0.0)
    mpu.initialize_model_parallel(TP, 1)
    rank = mpu.get_tensor_model_parallel_rank()
    QKNorm = generated_qk_norm().QKNorm
    torch.manual_seed(0)  # every rank draws the same whole tensors
    eps = 3e-6
    check(QKNorm(HN, eps=eps), Qwen3RMSNorm(HN, eps=eps), HEADS, False, rank, "per head (Qwen3), queries")
    check(QKNorm(HN, eps=eps), Qwen3RMSNorm(HN, eps=eps), GROUPS, False, rank, "per head (Qwen3), keys")
    check(QKNorm(HN, eps=eps, offset=1.0), Gemma3RMSNorm(HN, eps=eps), HEADS, False, rank, "per head (Gemma-3, 1 + w)")
    check(QKNorm(HN, eps=eps, heads=HEADS), Olmo2RMSNorm(HEADS * HN, eps=eps), HEADS, True, rank,
          "whole projection (OLMo-2), queries")
    check(QKNorm(HN, eps=eps, heads=GROUPS), Olmo2RMSNorm(GROUPS * HN, eps=eps), GROUPS, True, rank,
          "whole projection (OLMo-2), keys")
    # a per-rank norm (no all-reduce) is another function: the check above can tell them apart
    x = torch.randn(S, B, HEADS // TP, HN, generator=torch.Generator().manual_seed(rank)) * (1 + rank)
    whole = QKNorm(HN, eps=eps, heads=HEADS)
    per_rank = x.flatten(2) * torch.rsqrt(x.flatten(2).pow(2).mean(-1, keepdim=True) + eps)
    assert not torch.allclose(whole(x).flatten(2), per_rank, rtol=1e-3), "the all-reduce changes nothing"
    print(f"QKNORM-OK {rank}", flush=True)
    torch.distributed.barrier()  # a clean end: a rank that exits with gloo's threads still running aborts
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
