# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Start-up: arguments, torch.distributed, model-parallel groups, seeds."""

import random

import numpy as np
import torch
import deepspeed
from deepspeed.accelerator import get_accelerator

from megatron import get_args
from megatron import mpu
from megatron.global_vars import set_global_variables


def initialize_megatron(extra_args_provider=None, args_defaults={},
                        ignore_unknown_args=False, allow_no_cuda=False):
    """Parse arguments, then bring up distributed state and seed every RNG."""
    set_global_variables(extra_args_provider=extra_args_provider,
                         args_defaults=args_defaults,
                         ignore_unknown_args=ignore_unknown_args)

    def finish_mpu_init():
        args = get_args()
        _initialize_distributed()
        if args.rank == 0:
            print(f'> setting random seeds to {args.seed} ...', flush=True)
        _set_random_seed(args.seed)

    finish_mpu_init()
    return None


def setup_deepspeed_random_and_activation_checkpointing(args):
    """Route mpu's checkpointing and RNG tracker through DeepSpeed's."""
    num_layers = -(-args.num_layers // args.checkpoint_num_layers)
    deepspeed.checkpointing.configure(
        mpu,
        partition_activations=args.partition_activations,
        contiguous_checkpointing=args.contigious_checkpointing,
        num_checkpoints=num_layers,
        checkpoint_in_cpu=args.checkpoint_in_cpu,
        synchronize=args.synchronize_each_layer,
        profile=args.profile_backward)
    mpu.checkpoint = deepspeed.checkpointing.checkpoint
    mpu.get_cuda_rng_tracker = deepspeed.checkpointing.get_cuda_rng_tracker
    mpu.model_parallel_cuda_manual_seed = \
        deepspeed.checkpointing.model_parallel_cuda_manual_seed


def _initialize_distributed():
    args = get_args()
    accelerator = get_accelerator()
    if torch.distributed.is_initialized():
        args.rank = torch.distributed.get_rank()
        args.world_size = torch.distributed.get_world_size()
    else:
        if args.rank == 0:
            print('> starting torch.distributed', flush=True)
        if accelerator.device_name() == 'cuda' and accelerator.device_count() > 0:
            device = args.rank % accelerator.device_count()
            if args.local_rank is None:
                args.local_rank = device
            accelerator.set_device(args.local_rank)
        backend = args.distributed_backend
        if backend == 'nccl' and accelerator.device_name() != 'cuda':
            # NCCL needs CUDA; let DeepSpeed pick the accelerator's backend.
            backend = accelerator.communication_backend_name()
        deepspeed.init_distributed(dist_backend=backend)
        args.rank = torch.distributed.get_rank()
        args.world_size = torch.distributed.get_world_size()

    if mpu.model_parallel_is_initialized():
        print('> model parallel groups exist already', flush=True)
    else:
        mpu.initialize_model_parallel(args.tensor_model_parallel_size,
                                      args.pipeline_model_parallel_size,
                                      args.virtual_pipeline_model_parallel_size)

    if args.deepspeed and args.deepspeed_activation_checkpointing:
        setup_deepspeed_random_and_activation_checkpointing(args)


def _set_random_seed(seed_):
    """Seed python, numpy and torch; each pipeline stage gets its own seed."""
    if seed_ is None or seed_ <= 0:
        raise ValueError(f'seed must be a positive integer, got {seed_}')
    seed = seed_ + 100 * mpu.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    mpu.model_parallel_cuda_manual_seed(seed)
