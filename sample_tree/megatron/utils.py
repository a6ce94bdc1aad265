# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Assorted training helpers."""

import torch
from torch.nn.parallel import DistributedDataParallel as torchDDP

from megatron import mpu
from megatron.mpu.layers import param_is_not_tensor_parallel_duplicate


def unwrap_model(model, module_instances=(torchDDP)):
    """Strip wrapper modules (.module) from one model or a list of them."""
    as_list = isinstance(model, list)
    models = model if as_list else [model]
    out = []
    for m in models:
        while isinstance(m, module_instances):
            m = m.module
        out.append(m)
    return out if as_list else out[0]


def calc_params_l2_norm(model):
    """L2 norm of all parameters, counting tensor-parallel copies once."""
    models = model if isinstance(model, list) else [model]
    total = torch.zeros(1, dtype=torch.float)
    for m in models:
        for p in m.parameters():
            if getattr(p, 'shared', False):
                continue
            if param_is_not_tensor_parallel_duplicate(p):
                total += p.detach().float().norm().cpu() ** 2
    total = total.to(next(models[0].parameters()).device)
    torch.distributed.all_reduce(total, group=mpu.get_model_parallel_group())
    return total.item() ** 0.5


def average_losses_across_data_parallel_group(losses):
    """Mean of each loss over the data-parallel replicas (detached)."""
    stacked = torch.cat([loss.clone().detach().view(1) for loss in losses])
    group = mpu.get_data_parallel_group()
    torch.distributed.all_reduce(stacked, group=group)
    return stacked / torch.distributed.get_world_size(group=group)


def get_ltor_masks_and_position_ids(data,
                                    eod_token,
                                    reset_position_ids,
                                    reset_attention_mask,
                                    eod_mask_loss):
    """Causal mask (True = masked out), loss mask and position ids.

    With the reset flags, documents packed into one row (separated by
    eod_token) neither attend to each other nor share positions.
    """
    batch, seq = data.size()
    mask_rows = batch if reset_attention_mask else 1
    causal = torch.tril(torch.ones((mask_rows, seq, seq), device=data.device))
    attention_mask = causal.view(mask_rows, 1, seq, seq)

    loss_mask = torch.ones(data.size(), dtype=torch.float, device=data.device)
    if eod_mask_loss:
        loss_mask[data == eod_token] = 0.0

    position_ids = torch.arange(seq, dtype=torch.long, device=data.device)
    position_ids = position_ids.unsqueeze(0).expand_as(data)
    if reset_position_ids:
        position_ids = position_ids.clone()

    if reset_position_ids or reset_attention_mask:
        for b in range(batch):
            start = 0
            for pos in (data[b] == eod_token).nonzero().view(-1).tolist():
                if reset_attention_mask:
                    attention_mask[b, 0, pos + 1:, :pos + 1] = 0
                if reset_position_ids:
                    position_ids[b, pos + 1:] -= pos + 1 - start
                    start = pos + 1

    attention_mask = attention_mask < 0.5
    return attention_mask, loss_mask, position_ids
