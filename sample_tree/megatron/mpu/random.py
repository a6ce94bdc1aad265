# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""RNG bookkeeping for tensor parallelism, plus activation checkpointing.

Tensor-parallel ranks need *different* random streams inside their slice of
the model (weight init, attention dropout) and the *same* stream elsewhere.
The tracker keeps named generator states that can be swapped in with
fork().  On CUDA it swaps the device generator; without CUDA it swaps
the default CPU generator.
"""

import contextlib

import torch
from deepspeed.accelerator import get_accelerator

from .initialize import (get_data_parallel_rank,
                         get_tensor_model_parallel_group,
                         get_tensor_model_parallel_rank,
                         get_tensor_model_parallel_world_size)

_MODEL_PARALLEL_RNG_TRACKER_NAME = 'model-parallel-rng'


def _on_cuda():
    return get_accelerator().device_name() == 'cuda' and torch.cuda.is_available()


def _get_rng_state():
    return torch.cuda.get_rng_state() if _on_cuda() else torch.get_rng_state()


def _set_rng_state(state):
    if _on_cuda():
        torch.cuda.set_rng_state(state)
    else:
        torch.set_rng_state(state)


def _manual_seed(seed):
    if _on_cuda():
        torch.cuda.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def init_checkpointed_activations_memory_buffer():
    """Kept for interface compatibility; this tree does not pre-allocate."""
    return None


def reset_checkpointed_activations_memory_buffer():
    return None


def split_tensor_into_1d_equal_chunks(tensor):
    flat = tensor.view(-1)
    size = flat.numel() // get_tensor_model_parallel_world_size()
    start = size * get_tensor_model_parallel_rank()
    return flat[start:start + size]


def gather_split_1d_tensor(tensor):
    world_size = get_tensor_model_parallel_world_size()
    out = torch.empty(world_size * tensor.numel(), dtype=tensor.dtype,
                      device=tensor.device)
    chunks = list(out.chunk(world_size))
    torch.distributed.all_gather(chunks, tensor,
                                 group=get_tensor_model_parallel_group())
    return out


class CudaRNGStatesTracker:
    """Named RNG states that can be entered temporarily with fork."""

    def __init__(self):
        self.states_ = {}
        self.seeds_ = set()

    def reset(self):
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self):
        return dict(self.states_)

    def set_states(self, states):
        self.states_ = states

    def add(self, name, seed):
        if seed in self.seeds_:
            raise Exception(f'seed {seed} is already tracked')
        if name in self.states_:
            raise Exception(f'rng state {name} is already tracked')
        self.seeds_.add(seed)
        saved = _get_rng_state()
        _manual_seed(seed)
        self.states_[name] = _get_rng_state()
        _set_rng_state(saved)

    @contextlib.contextmanager
    def fork(self, name=_MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise Exception(f'rng state {name} was never added')
        outer = _get_rng_state()
        _set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = _get_rng_state()
            _set_rng_state(outer)


_CUDA_RNG_STATE_TRACKER = CudaRNGStatesTracker()


def get_cuda_rng_tracker():
    return _CUDA_RNG_STATE_TRACKER


def model_parallel_cuda_manual_seed(seed):
    """Seed the shared stream with seed and the per-tensor-rank stream
    with seed + 2718 + tp_rank."""
    tp_seed = seed + 2718 + get_tensor_model_parallel_rank()
    if torch.distributed.get_rank() == 0:
        print(f'> seeds: data-parallel {seed}, tensor-parallel {tp_seed} '
              f'(dp rank {get_data_parallel_rank()})', flush=True)
    _CUDA_RNG_STATE_TRACKER.reset()
    _manual_seed(seed)
    _CUDA_RNG_STATE_TRACKER.add(_MODEL_PARALLEL_RNG_TRACKER_NAME, tp_seed)


def _detach(inputs):
    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor):
            y = x.detach()
            y.requires_grad_(x.requires_grad)
            out.append(y)
        else:
            out.append(x)
    return tuple(out)


class CheckpointFunction(torch.autograd.Function):
    """Recompute run_function in backward, replaying every RNG stream."""

    @staticmethod
    def forward(ctx, run_function, *args):
        ctx.run_function = run_function
        ctx.cpu_state = torch.get_rng_state()
        ctx.device_state = _get_rng_state()
        ctx.tracker_states = get_cuda_rng_tracker().get_states()
        with torch.no_grad():
            outputs = run_function(*args)
        ctx.save_for_backward(*[a for a in args if isinstance(a, torch.Tensor)])
        ctx.layout = [isinstance(a, torch.Tensor) for a in args]
        ctx.non_tensors = [a for a in args if not isinstance(a, torch.Tensor)]
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        tensors = iter(ctx.saved_tensors)
        others = iter(ctx.non_tensors)
        inputs = [next(tensors) if is_t else next(others) for is_t in ctx.layout]
        here = (torch.get_rng_state(), _get_rng_state(),
                get_cuda_rng_tracker().get_states())
        torch.set_rng_state(ctx.cpu_state)
        _set_rng_state(ctx.device_state)
        get_cuda_rng_tracker().set_states(ctx.tracker_states)
        detached = _detach(inputs)
        with torch.enable_grad():
            outputs = ctx.run_function(*detached)
        torch.set_rng_state(here[0])
        _set_rng_state(here[1])
        get_cuda_rng_tracker().set_states(here[2])
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads)
                 if isinstance(o, torch.Tensor) and o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None,) + tuple(x.grad if isinstance(x, torch.Tensor) else None
                               for x in detached)


def checkpoint(function, *args):
    """Activation checkpointing that keeps the tensor-parallel RNG in sync."""
    return CheckpointFunction.apply(function, *args)
