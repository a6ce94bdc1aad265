# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Pretrain a GPT model with DeepSpeed (pipeline engine by default)."""

from functools import partial

import torch
import deepspeed
from deepspeed.accelerator.real_accelerator import get_accelerator

from megatron import get_args
from megatron import print_rank_0
from megatron import get_timers
from megatron import get_tokenizer
from megatron import mpu
from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.model import GPTModel, GPTModelPipe
from megatron.training import pretrain
from megatron.utils import get_ltor_masks_and_position_ids
from megatron.utils import average_losses_across_data_parallel_group


def model_provider(pre_process=True, post_process=True):
    """GPTModelPipe for the pipeline engine, GPTModel otherwise."""
    print_rank_0('> model provider: GPT')
    args = get_args()
    with deepspeed.zero.Init(data_parallel_group=mpu.get_data_parallel_group(),
                             remote_device=None if args.remote_device == 'none' else args.remote_device,
                             config_dict_or_path=args.deepspeed_config,
                             enabled=args.zero_stage == 3,
                             mpu=mpu):
        if args.deepspeed and not args.no_pipeline_parallel:
            model = GPTModelPipe(
                num_tokentypes=0,
                parallel_output=True
            )
            # training.py hands this to the engine after deepspeed.initialize.
            model._megatron_batch_fn = get_batch_pipe

            # The causal mask is the same for every batch: build it once so it
            # need not travel between pipeline stages.  True = masked out.
            attention_mask = torch.tril(torch.ones(
                (1, args.seq_length, args.seq_length),
                device=get_accelerator().current_device_name())).view(
                    1, 1, args.seq_length, args.seq_length)
            attention_mask = (attention_mask < 0.5)
            args.attn_mask = attention_mask.to(torch.bool)

        else:
            model = GPTModel(
                num_tokentypes=0,
                parallel_output=True,
                pre_process=pre_process,
                post_process=post_process
            )
    return model


def get_batch(data_iterator):
    """Next batch from the iterator (tensor-parallel rank 0), shared with
    the rest of the tensor-parallel group."""
    args = get_args()
    tokenizer = get_tokenizer()

    keys = ['text']
    datatype = torch.int64

    if data_iterator is not None:
        data = next(data_iterator)
    else:
        data = None
    data_b = mpu.broadcast_data(keys, data, datatype)

    # Inputs are all tokens but the last; labels are shifted by one.
    tokens_ = data_b['text'].long()
    labels = tokens_[:, 1:].contiguous()
    tokens = tokens_[:, :-1].contiguous()

    attention_mask, loss_mask, position_ids = get_ltor_masks_and_position_ids(
        tokens,
        tokenizer.eod,
        args.reset_position_ids,
        args.reset_attention_mask,
        args.eod_mask_loss)

    return tokens, labels, loss_mask, attention_mask, position_ids


def get_batch_pipe(data):
    """Batch function for the pipeline engine: ``data`` is one loader item.
    Returns ``(inputs, labels)`` the way the engine expects them."""
    args = get_args()
    tokenizer = get_tokenizer()

    keys = ['text']
    datatype = torch.int64

    data_b = mpu.broadcast_data(keys, data, datatype)

    tokens_ = data_b['text'].long()
    labels = tokens_[:, 1:].contiguous()
    tokens = tokens_[:, :-1].contiguous()

    attention_mask, loss_mask, position_ids = get_ltor_masks_and_position_ids(
        tokens,
        tokenizer.eod,
        args.reset_position_ids,
        args.reset_attention_mask,
        args.eod_mask_loss)

    return (tokens, position_ids, attention_mask), (labels, loss_mask)


def loss_func(loss_mask, moe_loss, mos_loss, output_tensor):
    args = get_args()
    losses = output_tensor.float()
    loss_mask = loss_mask.view(-1).float()
    loss = torch.sum(losses.view(-1) * loss_mask) / loss_mask.sum()

    averaged_loss = average_losses_across_data_parallel_group([loss])
    if max(args.num_experts) <= 1:
        return loss, {'lm loss': averaged_loss[0]}
    loss = loss + moe_loss
    return loss, {'lm loss': averaged_loss[0], 'moe loss': moe_loss}


def forward_step(data_iterator, model):
    """Forward one micro-batch; the returned partial turns the per-token
    losses into the scalar loss."""
    timers = get_timers()

    timers('batch-generator').start()
    tokens, labels, loss_mask, attention_mask, position_ids = get_batch(
        data_iterator)
    timers('batch-generator').stop()

    output_tensor, *other_losses = model(tokens, position_ids, attention_mask,
                                         labels=labels)

    moe_losses = [loss for loss in other_losses if loss is not None]
    moe_loss = sum(moe_losses)
    mos_loss = 0

    return output_tensor, partial(loss_func, loss_mask, moe_loss, mos_loss)


def train_valid_test_datasets_provider(train_val_test_num_samples):
    """GPT datasets sized for the requested train/valid/test samples."""
    args = get_args()

    print_rank_0('> GPT datasets: building ...')
    train_ds, valid_ds, test_ds = build_train_valid_test_datasets(
        data_prefix=args.data_path,
        data_impl=args.data_impl,
        splits_string=args.split,
        train_valid_test_num_samples=train_val_test_num_samples,
        seq_length=args.seq_length,
        seed=args.seed,
        skip_warmup=(not args.mmap_warmup))
    print_rank_0('> GPT datasets: ready')

    return train_ds, valid_ds, test_ds


if __name__ == "__main__":
    pretrain(train_valid_test_datasets_provider, model_provider, forward_step,
             args_defaults={'tokenizer_type': 'GPT2BPETokenizer'})
