# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""The pretraining driver (DeepSpeed engines only)."""

import json
import time

import torch
import deepspeed
from deepspeed.accelerator import get_accelerator

from megatron import get_args
from megatron import get_timers
from megatron import mpu
from megatron import print_rank_0
from megatron import get_num_microbatches
from megatron.checkpointing import load_checkpoint
from megatron.checkpointing import save_checkpoint
from megatron.data.data_samplers import build_pretraining_data_loader
from megatron.global_vars import ConstantNumMicroBatches
from megatron.initialize import initialize_megatron
from megatron.learning_rates import AnnealingLR
from megatron.optimizer import get_megatron_optimizer
from megatron.utils import calc_params_l2_norm
from megatron.utils import unwrap_model


def pretrain(train_valid_test_dataset_provider,
             model_provider,
             forward_step_func,
             extra_args_provider=None,
             args_defaults={},
             data_post_process=None):
    """initialize -> model/optimizer/scheduler -> data -> train -> save."""
    initialize_megatron(extra_args_provider=extra_args_provider,
                        args_defaults=args_defaults)

    args = get_args()
    timers = get_timers()

    if args.deepspeed:
        with open(args.deepspeed_config, 'r', encoding='utf-8') as f:
            args.deepspeed_configuration = json.load(f)
        _sync_batch_size_with_deepspeed_config(args)

    timers('model-and-optimizer-setup').start()
    model, optimizer, lr_scheduler = setup_model_and_optimizer(model_provider)
    timers('model-and-optimizer-setup').stop()

    timers('train/valid/test-data-iterators-setup').start()
    train_data_iterator, valid_data_iterator, test_data_iterator \
        = build_train_valid_test_data_iterators(
            train_valid_test_dataset_provider)
    timers('train/valid/test-data-iterators-setup').stop()

    print_rank_0('> setup complete')
    timers.log(['model-and-optimizer-setup',
                'train/valid/test-data-iterators-setup'])
    print_rank_0('> starting training')

    iteration = args.iteration
    if args.do_train and args.train_iters > 0:
        iteration = train(forward_step_func,
                          model, optimizer, lr_scheduler,
                          train_data_iterator, valid_data_iterator)

    if args.do_valid:
        evaluate_and_print_results('end of training (validation set)',
                                   forward_step_func, valid_data_iterator,
                                   model, iteration)

    if args.save and iteration != 0 and iteration != args.last_saved_iteration:
        save_checkpoint(iteration, model, optimizer, lr_scheduler)

    # Leave together: a rank exiting while a peer still communicates can
    # abort the peer's communication threads.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _sync_batch_size_with_deepspeed_config(args):
    """The DeepSpeed JSON fixes the micro batch and accumulation steps; make
    Megatron's global batch size agree with it."""
    cfg = args.deepspeed_configuration
    micro = cfg.get('train_micro_batch_size_per_gpu')
    if micro is not None:
        assert micro == args.micro_batch_size, \
            f'--micro-batch-size {args.micro_batch_size} differs from ' \
            f'train_micro_batch_size_per_gpu {micro} in the DeepSpeed config'
    if 'train_batch_size' in cfg:
        global_batch = cfg['train_batch_size']
    elif 'gradient_accumulation_steps' in cfg:
        global_batch = args.micro_batch_size * args.data_parallel_size * \
            cfg['gradient_accumulation_steps']
    else:
        global_batch = args.global_batch_size
    if global_batch != args.global_batch_size:
        print_rank_0(f'> global batch size {args.global_batch_size} -> '
                     f'{global_batch} (from the DeepSpeed config)')
        args.global_batch_size = global_batch
    import megatron.global_vars as global_vars
    global_vars._GLOBAL_NUM_MICROBATCHES_CALCULATOR = ConstantNumMicroBatches(
        args.global_batch_size, args.micro_batch_size, args.data_parallel_size)


def get_model(model_provider_func):
    """Build this rank's model chunk; DeepSpeed wraps it later."""
    args = get_args()

    pre_process = mpu.is_pipeline_first_stage()
    post_process = mpu.is_pipeline_last_stage()
    model = model_provider_func(pre_process=pre_process,
                                post_process=post_process)
    if not isinstance(model, list):
        model = [model]

    # Optimizer helpers expect these attributes on every parameter.
    for model_module in model:
        for param in model_module.parameters():
            mpu.set_defaults_if_not_set_tensor_model_parallel_attributes(param)

    if mpu.get_data_parallel_rank() == 0:
        count = sum(p.nelement() for m in model for p in m.parameters())
        print(f' > number of parameters on (tensor, pipeline) model parallel '
              f'rank ({mpu.get_tensor_model_parallel_rank()}, '
              f'{mpu.get_pipeline_model_parallel_rank()}): {count}', flush=True)

    if args.deepspeed:
        return model

    raise NotImplementedError(
        'the sample tree trains only through DeepSpeed: pass --deepspeed '
        '--deepspeed_config <json>')


def get_learning_rate_scheduler(optimizer):
    args = get_args()
    if args.train_iters:
        if args.lr_decay_iters is None:
            args.lr_decay_iters = args.train_iters
        decay_steps = args.lr_decay_iters * args.global_batch_size
        if args.lr_warmup_fraction is not None:
            warmup_steps = args.lr_warmup_fraction * decay_steps
        else:
            warmup_steps = args.lr_warmup_iters * args.global_batch_size
    elif args.train_samples:
        args.train_iters = args.train_samples // args.global_batch_size
        if args.lr_decay_samples is None:
            args.lr_decay_samples = args.train_samples
        decay_steps = args.lr_decay_samples
        if args.lr_warmup_fraction is not None:
            warmup_steps = args.lr_warmup_fraction * decay_steps
        else:
            warmup_steps = args.lr_warmup_samples
    else:
        raise Exception('either --train-iters or --train-samples is required')

    lr_scheduler = AnnealingLR(
        optimizer,
        max_lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        decay_style=args.lr_decay_style,
        use_checkpoint_lr_scheduler=args.use_checkpoint_lr_scheduler,
        override_lr_scheduler=args.override_lr_scheduler)

    return lr_scheduler


def setup_model_and_optimizer(model_provider_func):
    args = get_args()

    model = get_model(model_provider_func)
    unwrapped_model = unwrap_model(model)

    optimizer = get_megatron_optimizer(unwrapped_model)
    lr_scheduler = get_learning_rate_scheduler(optimizer)

    if args.deepspeed:
        print_rank_0('> wrapping the model in a DeepSpeed engine')
        model, optimizer, _, lr_scheduler = deepspeed.initialize(
            model=model[0],
            optimizer=optimizer,
            args=args,
            lr_scheduler=lr_scheduler,
            mpu=mpu if args.no_pipeline_parallel else None
        )
        if isinstance(model, deepspeed.PipelineEngine):
            # pretrain_gpt.py stored its batch function on the module.
            model.set_batch_fn(model.module._megatron_batch_fn)

            assert model.grid.get_pipe_parallel_rank() == \
                mpu.get_pipeline_model_parallel_rank()
            assert model.grid.get_slice_parallel_rank() == \
                mpu.get_tensor_model_parallel_rank()
            assert model.grid.get_data_parallel_rank() == \
                mpu.get_data_parallel_rank()
        model = [model]

    if args.load is not None:
        args.iteration = load_checkpoint(model, optimizer, lr_scheduler)
    else:
        args.iteration = 0
    args.last_saved_iteration = None

    return model, optimizer, lr_scheduler


def _forward_backward_no_pipelining(forward_step_func, data_iterator, model):
    """Micro-batches through the plain engine; one optimizer step at the end."""
    losses_reduced = []
    num_microbatches = get_num_microbatches()
    for i in range(num_microbatches):
        model.set_gradient_accumulation_boundary(i == num_microbatches - 1)
        output_tensor, loss_func = forward_step_func(data_iterator, model)
        loss, loss_reduced = loss_func(output_tensor)
        model.backward(loss)
        losses_reduced.append(loss_reduced)
    return losses_reduced


def train_step(forward_step_func, data_iterator,
               model, optimizer, lr_scheduler):
    """One optimizer step; returns (losses, skipped, grad norm, zeros)."""
    args = get_args()
    assert args.deepspeed, 'only DeepSpeed training is supported'

    if args.deepspeed and args.ds_pipeline_enabled:
        skipped_iter = 0
        num_zeros_in_grad = 0
        assert isinstance(model[0], deepspeed.PipelineEngine)
        loss = model[0].train_batch(data_iter=data_iterator)
        grad_norm = model[0].get_global_grad_norm()
        return {'lm loss': loss}, skipped_iter, grad_norm, num_zeros_in_grad

    losses_reduced = _forward_backward_no_pipelining(
        forward_step_func, data_iterator, model[0])

    increment = get_num_microbatches() * args.micro_batch_size * \
        args.data_parallel_size
    model[0].step(lr_kwargs={'increment': increment})

    loss_reduced = {}
    for key in losses_reduced[0]:
        values = [x[key] for x in losses_reduced]
        loss_reduced[key] = sum(values) / len(values)
    return loss_reduced, 0, model[0].get_global_grad_norm(), None


def _as_float(value):
    return value.item() if torch.is_tensor(value) else float(value)


def training_log(loss_dict, iteration, learning_rate, elapsed, grad_norm,
                 params_norm):
    """One line per iteration on rank 0."""
    args = get_args()
    line = f' iteration {iteration}/{args.train_iters} |'
    line += f' consumed samples: {args.consumed_train_samples} |'
    line += f' elapsed time per iteration (ms): {elapsed * 1000.0:.1f} |'
    line += f' learning rate: {learning_rate:.3E} |'
    line += f' global batch size: {args.global_batch_size} |'
    for key, value in loss_dict.items():
        line += f' {key}: {_as_float(value):.6E} |'
    if grad_norm is not None:
        line += f' grad norm: {_as_float(grad_norm):.3f} |'
    if params_norm is not None:
        line += f' params norm: {params_norm:.3f} |'
    print_rank_0(line)


def train(forward_step_func, model, optimizer, lr_scheduler,
          train_data_iterator, valid_data_iterator):
    args = get_args()

    for model_module in model:
        model_module.train()

    iteration = args.iteration
    while iteration < args.train_iters:
        start = time.time()
        loss_dict, skipped_iter, grad_norm, num_zeros_in_grad = \
            train_step(forward_step_func, train_data_iterator, model,
                       optimizer, lr_scheduler)
        iteration += 1
        args.iteration = iteration
        args.consumed_train_samples += args.global_batch_size
        args.consumed_train_tokens += args.global_batch_size * args.seq_length

        params_norm = calc_params_l2_norm(model) if args.log_params_norm else None
        learning_rate = optimizer.param_groups[0]['lr']
        training_log(loss_dict, iteration, learning_rate, time.time() - start,
                     grad_norm, params_norm)

        if args.eval_interval and iteration % args.eval_interval == 0 and \
                args.do_valid:
            evaluate_and_print_results(f'iteration {iteration}',
                                       forward_step_func, valid_data_iterator,
                                       model, iteration)

        if args.save and args.save_interval and \
                iteration % args.save_interval == 0:
            save_checkpoint(iteration, model, optimizer, lr_scheduler)
            args.last_saved_iteration = iteration

        if args.exit_interval and iteration % args.exit_interval == 0:
            if args.save and args.last_saved_iteration != iteration:
                save_checkpoint(iteration, model, optimizer, lr_scheduler)
                args.last_saved_iteration = iteration
            torch.distributed.barrier()
            print_rank_0(f'exiting program at iteration {iteration}')
            break

    return iteration


def evaluate(forward_step_func, data_iterator, model):
    """Mean loss over --eval-iters batches."""
    args = get_args()
    for model_module in model:
        model_module.eval()

    totals = {}
    with torch.no_grad():
        for _ in range(args.eval_iters):
            if args.deepspeed and args.ds_pipeline_enabled:
                loss = model[0].eval_batch(data_iterator)
                loss_dicts = [{'lm loss': loss}] * get_num_microbatches()
            else:
                loss_dicts = []
                for _ in range(get_num_microbatches()):
                    output_tensor, loss_func = forward_step_func(data_iterator,
                                                                 model[0])
                    loss_dicts.append(loss_func(output_tensor)[1])
            for d in loss_dicts:
                for key, value in d.items():
                    totals[key] = totals.get(key, 0.0) + _as_float(value)
            args.consumed_valid_samples += args.global_batch_size

    for model_module in model:
        model_module.train()
    count = max(1, args.eval_iters * get_num_microbatches())
    return {key: value / count for key, value in totals.items()}


def evaluate_and_print_results(prefix, forward_step_func,
                               data_iterator, model, iteration):
    results = evaluate(forward_step_func, data_iterator, model)
    line = f' validation loss at {prefix} |'
    for key, value in results.items():
        line += f' {key} value: {value:.6E} |'
    print_rank_0('-' * (len(line) + 1))
    print_rank_0(line)
    print_rank_0('-' * (len(line) + 1))


def cyclic_iter(iter):
    while True:
        for x in iter:
            yield x


def build_train_valid_test_data_iterators(
        build_train_valid_test_datasets_provider):
    """Datasets and loaders on tensor-parallel rank 0 (other ranks receive
    batches through mpu.broadcast_data); flags are shared with the group."""
    args = get_args()

    (train_dataloader, valid_dataloader, test_dataloader) = (None, None, None)

    print_rank_0('> data: building datasets and loaders')

    if args.iteration > 0 and args.consumed_train_samples == 0:
        args.consumed_train_samples = args.iteration * args.global_batch_size

    if mpu.get_tensor_model_parallel_rank() == 0:
        train_samples = args.train_iters * args.global_batch_size
        eval_iters = (args.train_iters // args.eval_interval + 1) * \
            args.eval_iters
        test_iters = args.eval_iters
        train_val_test_num_samples = [train_samples,
                                      eval_iters * args.global_batch_size,
                                      test_iters * args.global_batch_size]
        print_rank_0(f' > datasets target sizes (minimum size): train '
                     f'{train_val_test_num_samples[0]}, validation '
                     f'{train_val_test_num_samples[1]}, test '
                     f'{train_val_test_num_samples[2]}')

        train_ds, valid_ds, test_ds = build_train_valid_test_datasets_provider(
            train_val_test_num_samples)

        train_dataloader = build_pretraining_data_loader(
            train_ds, args.consumed_train_samples)
        valid_dataloader = build_pretraining_data_loader(
            valid_ds, args.consumed_valid_samples)
        test_dataloader = build_pretraining_data_loader(test_ds, 0)

        do_train = train_dataloader is not None and args.train_iters > 0
        do_valid = valid_dataloader is not None and args.eval_iters > 0
        do_test = test_dataloader is not None and args.eval_iters > 0
        flags = torch.tensor([int(do_train), int(do_valid), int(do_test)],
                             dtype=torch.long)
    else:
        flags = torch.tensor([0, 0, 0], dtype=torch.long)

    flags = flags.to(get_accelerator().current_device_name())
    torch.distributed.broadcast(flags,
                                mpu.get_tensor_model_parallel_src_rank(),
                                group=mpu.get_tensor_model_parallel_group())
    args.do_train = flags[0].item()
    args.do_valid = flags[1].item()
    args.do_test = flags[2].item()

    def make_iter(loader):
        if loader is None:
            return None
        if args.dataloader_type == 'single':
            return iter(loader)
        return iter(cyclic_iter(loader))

    return (make_iter(train_dataloader), make_iter(valid_dataloader),
            make_iter(test_dataloader))
