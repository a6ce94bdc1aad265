# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Checkpoints through the DeepSpeed engine.

DeepSpeed writes model, optimizer and scheduler state; Megatron adds
arguments, the iteration and RNG states as client_state.
"""

import os
import random

import numpy as np
import torch

from megatron import get_args, is_rank_0, mpu, print_rank_0

_CHECKPOINT_VERSION = 3.0


def get_checkpoint_tracker_filename(checkpoints_path):
    return os.path.join(checkpoints_path, 'latest_checkpointed_iteration.txt')


def get_checkpoint_name(checkpoints_path, iteration, release=False):
    """<path>/iter_XXXXXXX/mp_rank_XX[_XXX]/model_optim_rng.pt"""
    directory = 'release' if release else f'iter_{iteration:07d}'
    rank_dir = f'mp_rank_{mpu.get_tensor_model_parallel_rank():02d}'
    if mpu.get_pipeline_model_parallel_world_size() > 1:
        rank_dir += f'_{mpu.get_pipeline_model_parallel_rank():03d}'
    return os.path.join(checkpoints_path, directory, rank_dir,
                        'model_optim_rng.pt')


def _rng_state():
    state = {'random_rng_state': random.getstate(),
             'np_rng_state': np.random.get_state(),
             'torch_rng_state': torch.get_rng_state(),
             'rng_tracker_states': mpu.get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state['cuda_rng_state'] = torch.cuda.get_rng_state()
    return state


def _client_args(args):
    """Arguments without tensors (keeps the client state plain)."""
    import argparse
    return argparse.Namespace(**{k: v for k, v in vars(args).items()
                                 if not torch.is_tensor(v)})


def save_checkpoint(iteration, model, optimizer, lr_scheduler):
    args = get_args()
    assert args.deepspeed, 'only DeepSpeed checkpoints are supported'
    print_rank_0(f'> writing checkpoint of iteration {iteration} to {args.save}')

    state_dict = {'args': _client_args(args),
                  'checkpoint_version': _CHECKPOINT_VERSION,
                  'iteration': iteration,
                  'tokens': args.consumed_train_tokens}
    if not args.no_save_rng:
        state_dict.update(_rng_state())

    # The plain engine saves module.state_dict(); make that the nested
    # Megatron layout for the duration of the save.
    if args.no_pipeline_parallel:
        original_state_dict = model[0].module.state_dict
        model[0].module.state_dict = model[0].module.state_dict_for_save_checkpoint

    checkpoint_name = get_checkpoint_name(args.save, iteration)
    # DeepSpeed wants the top directory; drop file name, rank dir, iter dir.
    for _ in range(3):
        checkpoint_name = os.path.dirname(checkpoint_name)
    model[0].save_checkpoint(checkpoint_name, client_state=state_dict)

    if args.no_pipeline_parallel:
        model[0].module.state_dict = original_state_dict

    torch.distributed.barrier()
    print_rank_0(f'> checkpoint of iteration {iteration} written to {args.save}')
    if is_rank_0():
        with open(get_checkpoint_tracker_filename(args.save), 'w') as f:
            f.write(str(iteration))
    torch.distributed.barrier()


def load_checkpoint(model, optimizer, lr_scheduler, load_arg='load', strict=True):
    """Restore through DeepSpeed; return the iteration to resume from."""
    args = get_args()
    load_dir = getattr(args, load_arg)
    assert args.deepspeed, 'only DeepSpeed checkpoints are supported'

    if args.finetune:
        loaded_dir, state_dict = model[0].load_checkpoint(
            load_dir, load_module_strict=strict, load_optimizer_states=False,
            load_lr_scheduler_states=False, load_module_only=True)
    else:
        loaded_dir, state_dict = model[0].load_checkpoint(
            load_dir, load_module_strict=strict,
            load_optimizer_states=not args.no_load_optim,
            load_lr_scheduler_states=not args.no_load_lr_state)
    if loaded_dir is None:
        print_rank_0(f'WARNING: no checkpoint found in {load_dir}; '
                     'starting from random weights')
        return 0

    if args.finetune:
        iteration = 0
        model[0].global_steps = 0
    else:
        iteration = state_dict['iteration']
        args.consumed_train_tokens = state_dict.get('tokens', 0)
        ckpt_args = state_dict.get('args')
        if ckpt_args is not None:
            for name in ('num_layers', 'hidden_size', 'num_attention_heads',
                         'max_position_embeddings', 'padded_vocab_size',
                         'tensor_model_parallel_size',
                         'pipeline_model_parallel_size'):
                theirs = getattr(ckpt_args, name, None)
                assert theirs == getattr(args, name, None), \
                    f'{name} is {getattr(args, name, None)} but {theirs} ' \
                    f'in the checkpoint'
            args.consumed_train_samples = getattr(ckpt_args,
                                                  'consumed_train_samples', 0)
            args.consumed_valid_samples = getattr(ckpt_args,
                                                  'consumed_valid_samples', 0)

    if not args.finetune and not args.no_load_rng and \
            'torch_rng_state' in state_dict:
        random.setstate(state_dict['random_rng_state'])
        np.random.set_state(state_dict['np_rng_state'])
        torch.set_rng_state(state_dict['torch_rng_state'])
        if torch.cuda.is_available() and 'cuda_rng_state' in state_dict:
            torch.cuda.set_rng_state(state_dict['cuda_rng_state'])
        if state_dict.get('rng_tracker_states'):
            mpu.get_cuda_rng_tracker().set_states(
                state_dict['rng_tracker_states'])

    torch.distributed.barrier()
    print_rank_0(f'> resumed from {load_dir} (iteration {iteration})')
    return iteration
