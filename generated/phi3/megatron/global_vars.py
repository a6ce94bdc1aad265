# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Process-wide singletons: arguments, tokenizer, timers, micro-batch count."""

import time

import torch
from deepspeed.accelerator import get_accelerator

from megatron.tokenizer import build_tokenizer
from .arguments import parse_args

_GLOBAL_ARGS = None
_GLOBAL_NUM_MICROBATCHES_CALCULATOR = None
_GLOBAL_TOKENIZER = None
_GLOBAL_TENSORBOARD_WRITER = None
_GLOBAL_TIMERS = None


def get_args():
    _ensure_var_is_initialized(_GLOBAL_ARGS, 'args')
    return _GLOBAL_ARGS


def get_num_microbatches():
    return _GLOBAL_NUM_MICROBATCHES_CALCULATOR.get()


def get_current_global_batch_size():
    return _GLOBAL_NUM_MICROBATCHES_CALCULATOR.get_current_global_batch_size()


def update_num_microbatches(consumed_samples, consistency_check=True):
    _GLOBAL_NUM_MICROBATCHES_CALCULATOR.update(consumed_samples,
                                               consistency_check)


def get_tokenizer():
    _ensure_var_is_initialized(_GLOBAL_TOKENIZER, 'tokenizer')
    return _GLOBAL_TOKENIZER


def get_tensorboard_writer():
    """Always None: this tree does not write TensorBoard logs."""
    return _GLOBAL_TENSORBOARD_WRITER


def get_timers():
    _ensure_var_is_initialized(_GLOBAL_TIMERS, 'timers')
    return _GLOBAL_TIMERS


def set_global_variables(extra_args_provider=None, args_defaults={},
                         ignore_unknown_args=False):
    args = _parse_args(extra_args_provider=extra_args_provider,
                       defaults=args_defaults,
                       ignore_unknown_args=ignore_unknown_args)
    _build_num_microbatches_calculator(args)
    if args.vocab_file or args.tokenizer_model:
        _ = _build_tokenizer(args)
    _set_timers()


def _parse_args(extra_args_provider=None, defaults={},
                ignore_unknown_args=False):
    global _GLOBAL_ARGS
    _ensure_var_is_not_initialized(_GLOBAL_ARGS, 'args')
    _GLOBAL_ARGS = parse_args(extra_args_provider=extra_args_provider,
                              defaults=defaults,
                              ignore_unknown_args=ignore_unknown_args)
    return _GLOBAL_ARGS


class ConstantNumMicroBatches:
    """global batch = micro batch * data parallel size * number of micro batches."""

    def __init__(self, global_batch_size, micro_batch_size, data_parallel_size):
        per_step = micro_batch_size * data_parallel_size
        assert global_batch_size % per_step == 0, \
            f'global batch size {global_batch_size} is not a multiple of ' \
            f'micro batch size x data parallel size ({per_step})'
        self.num_micro_batches = global_batch_size // per_step
        self.current_global_batch_size = global_batch_size

    def get(self):
        return self.num_micro_batches

    def get_current_global_batch_size(self):
        return self.current_global_batch_size

    def update(self, consumed_samples, consistency_check):
        pass


def _build_num_microbatches_calculator(args):
    global _GLOBAL_NUM_MICROBATCHES_CALCULATOR
    _GLOBAL_NUM_MICROBATCHES_CALCULATOR = ConstantNumMicroBatches(
        args.global_batch_size, args.micro_batch_size, args.data_parallel_size)


def _build_tokenizer(args):
    global _GLOBAL_TOKENIZER
    _ensure_var_is_not_initialized(_GLOBAL_TOKENIZER, 'tokenizer')
    _GLOBAL_TOKENIZER = build_tokenizer(args)
    return _GLOBAL_TOKENIZER


def rebuild_tokenizer(args):
    global _GLOBAL_TOKENIZER
    _GLOBAL_TOKENIZER = None
    return _build_tokenizer(args)


def _set_timers():
    global _GLOBAL_TIMERS
    _ensure_var_is_not_initialized(_GLOBAL_TIMERS, 'timers')
    _GLOBAL_TIMERS = Timers()


def _ensure_var_is_initialized(var, name):
    assert var is not None, f'{name} is not initialized'


def _ensure_var_is_not_initialized(var, name):
    assert var is None, f'{name} is already initialized'


class _Timer:

    def __init__(self, name):
        self.name_ = name
        self.elapsed_ = 0.0
        self.started_ = False
        self.start_time = time.time()

    def start(self):
        assert not self.started_, f'timer {self.name_} already running'
        get_accelerator().synchronize()
        self.start_time = time.time()
        self.started_ = True

    def stop(self):
        assert self.started_, f'timer {self.name_} is not running'
        get_accelerator().synchronize()
        self.elapsed_ += time.time() - self.start_time
        self.started_ = False

    def reset(self):
        self.elapsed_ = 0.0
        self.started_ = False

    def elapsed(self, reset=True):
        running = self.started_
        if running:
            self.stop()
        value = self.elapsed_
        if reset:
            self.reset()
        if running:
            self.start()
        return value


class Timers:
    """Named wall-clock timers: timers('name').start() / .stop()."""

    def __init__(self):
        self.timers = {}

    def __call__(self, name):
        if name not in self.timers:
            self.timers[name] = _Timer(name)
        return self.timers[name]

    def log(self, names, normalizer=1.0, reset=True):
        assert normalizer > 0.0
        parts = [f'{n}: {self.timers[n].elapsed(reset=reset) * 1000.0 / normalizer:.2f}'
                 for n in names if n in self.timers]
        line = 'time (ms) | ' + ' | '.join(parts)
        if not torch.distributed.is_initialized() or \
                torch.distributed.get_rank() == torch.distributed.get_world_size() - 1:
            print(line, flush=True)
