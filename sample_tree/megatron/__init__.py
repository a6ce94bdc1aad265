# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Sample Megatron-DeepSpeed package."""

import torch

from .global_vars import (get_args, get_current_global_batch_size,
                          get_num_microbatches, get_tensorboard_writer,
                          get_timers, get_tokenizer, update_num_microbatches)
from .initialize import initialize_megatron


def print_rank_0(message):
    """Print once: on rank 0, or always when not distributed."""
    if not torch.distributed.is_initialized() or \
            torch.distributed.get_rank() == 0:
        print(message, flush=True)


def is_last_rank():
    return torch.distributed.get_rank() == \
        torch.distributed.get_world_size() - 1


def print_rank_last(message):
    if not torch.distributed.is_initialized() or is_last_rank():
        print(message, flush=True)


def is_rank_0():
    return not torch.distributed.is_initialized() or \
        torch.distributed.get_rank() == 0
