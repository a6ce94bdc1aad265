# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Broadcast a batch from tensor-parallel rank 0 to the rest of its group."""

import torch
from deepspeed.accelerator import get_accelerator

from .initialize import (get_tensor_model_parallel_group,
                         get_tensor_model_parallel_rank,
                         get_tensor_model_parallel_src_rank,
                         get_tensor_model_parallel_world_size)

_MAX_DATA_DIM = 5


def _broadcast(tensor):
    torch.distributed.broadcast(tensor, get_tensor_model_parallel_src_rank(),
                                group=get_tensor_model_parallel_group())


def _build_key_size_numel_dictionaries(keys, data):
    """Share every tensor's shape (rank 0 knows them) with the group."""
    shapes = torch.zeros(len(keys), _MAX_DATA_DIM, dtype=torch.long)
    if get_tensor_model_parallel_rank() == 0:
        for row, key in enumerate(keys):
            size = data[key].size()
            assert len(size) < _MAX_DATA_DIM, 'tensor has too many dims'
            shapes[row, :len(size)] = torch.tensor(size, dtype=torch.long)
    if get_tensor_model_parallel_world_size() > 1:
        shapes = shapes.to(get_accelerator().current_device_name())
        _broadcast(shapes)
        shapes = shapes.cpu()
    key_size, key_numel = {}, {}
    for row, key in enumerate(keys):
        size = [int(s) for s in shapes[row] if s > 0]
        key_size[key] = size
        key_numel[key] = int(torch.tensor(size).prod().item()) if size else 0
    return key_size, key_numel, sum(key_numel.values())


def broadcast_data(keys, data, datatype):
    """Return {key: tensor} on every rank of the tensor-parallel group,
    filled from data on its rank 0 (other ranks may pass None)."""
    key_size, key_numel, total = _build_key_size_numel_dictionaries(keys, data)
    device = get_accelerator().current_device_name()
    if get_tensor_model_parallel_rank() == 0:
        for key in keys:
            assert data[key].dtype == datatype, \
                f'{key} is {data[key].dtype}, expected {datatype}'
        flat = torch.cat([data[k].contiguous().view(-1) for k in keys]).to(device)
    else:
        flat = torch.empty(total, dtype=datatype, device=device)
    if get_tensor_model_parallel_world_size() > 1:
        _broadcast(flat)
    out, offset = {}, 0
    for key in keys:
        out[key] = flat.narrow(0, offset, key_numel[key]).view(key_size[key])
        offset += key_numel[key]
    return out
