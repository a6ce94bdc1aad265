# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Cross entropy over logits whose vocabulary axis is split across ranks."""

import torch

from .initialize import (get_tensor_model_parallel_group,
                         get_tensor_model_parallel_rank,
                         get_tensor_model_parallel_world_size)
from .utils import VocabUtility


def _all_reduce(tensor, op):
    if get_tensor_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(tensor, op=op,
                                     group=get_tensor_model_parallel_group())
    return tensor


class _VocabParallelCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, vocab_parallel_logits, target):
        # Shift by the global max for a stable softmax.
        global_max = torch.max(vocab_parallel_logits, dim=-1)[0]
        _all_reduce(global_max, torch.distributed.ReduceOp.MAX)
        shifted = vocab_parallel_logits - global_max.unsqueeze(-1)

        part_size = shifted.size(-1)
        lo, hi = VocabUtility.vocab_range_from_per_partition_vocab_size(
            part_size, get_tensor_model_parallel_rank(),
            get_tensor_model_parallel_world_size())
        # Targets owned by another rank contribute zero here.
        foreign = (target < lo) | (target >= hi)
        local_target = (target - lo).masked_fill(foreign, 0)

        flat = shifted.view(-1, part_size)
        rows = torch.arange(flat.size(0), device=flat.device)
        flat_target = local_target.view(-1)
        target_logit = flat[rows, flat_target].clone().view_as(target)
        target_logit = target_logit.masked_fill(foreign, 0.0)
        _all_reduce(target_logit, torch.distributed.ReduceOp.SUM)

        exp = torch.exp(shifted)
        denom = exp.sum(dim=-1)
        _all_reduce(denom, torch.distributed.ReduceOp.SUM)

        loss = torch.log(denom) - target_logit
        softmax = exp / denom.unsqueeze(-1)
        ctx.save_for_backward(softmax, foreign, flat_target)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        softmax, foreign, flat_target = ctx.saved_tensors
        grad = softmax.clone()
        flat = grad.view(-1, grad.size(-1))
        rows = torch.arange(flat.size(0), device=flat.device)
        flat[rows, flat_target] -= 1.0 - foreign.view(-1).to(flat.dtype)
        grad.mul_(grad_output.unsqueeze(-1))
        return grad, None


def vocab_parallel_cross_entropy(vocab_parallel_logits, target):
    """Per-token loss; vocab_parallel_logits holds this rank's vocab slice."""
    return _VocabParallelCrossEntropy.apply(vocab_parallel_logits, target)
