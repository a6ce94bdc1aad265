# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Autograd-aware collectives at the edges of tensor-parallel regions.

copy    : identity forward, all-reduce backward
reduce  : all-reduce forward, identity backward
scatter : keep own last-dim slice forward, all-gather backward
gather  : all-gather last dim forward, keep own slice backward
"""

import torch

from .initialize import (get_tensor_model_parallel_group,
                         get_tensor_model_parallel_rank,
                         get_tensor_model_parallel_world_size)
from .utils import split_tensor_along_last_dim


def _reduce(input_):
    if get_tensor_model_parallel_world_size() == 1:
        return input_
    torch.distributed.all_reduce(input_, group=get_tensor_model_parallel_group())
    return input_


def _split(input_):
    world_size = get_tensor_model_parallel_world_size()
    if world_size == 1:
        return input_
    pieces = split_tensor_along_last_dim(input_, world_size)
    return pieces[get_tensor_model_parallel_rank()].contiguous()


def _gather(input_):
    world_size = get_tensor_model_parallel_world_size()
    if world_size == 1:
        return input_
    input_ = input_.contiguous()
    parts = [torch.empty_like(input_) for _ in range(world_size)]
    torch.distributed.all_gather(parts, input_,
                                 group=get_tensor_model_parallel_group())
    return torch.cat(parts, dim=input_.dim() - 1).contiguous()


class _CopyToModelParallelRegion(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input_):
        return input_

    @staticmethod
    def backward(ctx, grad_output):
        return _reduce(grad_output)


class _ReduceFromModelParallelRegion(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input_):
        return _reduce(input_)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class _ScatterToModelParallelRegion(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input_):
        return _split(input_)

    @staticmethod
    def backward(ctx, grad_output):
        return _gather(grad_output)


class _GatherFromModelParallelRegion(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input_):
        return _gather(input_)

    @staticmethod
    def backward(ctx, grad_output):
        return _split(grad_output)


def copy_to_tensor_model_parallel_region(input_):
    return _CopyToModelParallelRegion.apply(input_)


def reduce_from_tensor_model_parallel_region(input_):
    return _ReduceFromModelParallelRegion.apply(input_)


def scatter_to_tensor_model_parallel_region(input_):
    return _ScatterToModelParallelRegion.apply(input_)


def gather_from_tensor_model_parallel_region(input_):
    return _GatherFromModelParallelRegion.apply(input_)
