"""Run by test_sample_tree_mpu.py under torch.distributed.run (2 ranks, gloo).

Checks the sample tree's tensor-parallel building blocks at TP=2 against
plain single-device PyTorch.  Prints MPU-OK <rank> on success."""

import argparse
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, sys.argv[1])  # the sample tree

import megatron.global_vars as global_vars  # noqa: E402
from megatron import mpu  # noqa: E402

TP = 2


def close(a, b, what):
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), \
        f'{what}: max diff {(a - b).abs().max().item()}'


def gather_dim(t, dim):
    parts = [torch.empty_like(t) for _ in range(TP)]
    torch.distributed.all_gather(parts, t.contiguous(),
                                 group=mpu.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=dim)


def main():
    torch.distributed.init_process_group('gloo')
    global_vars._GLOBAL_ARGS = argparse.Namespace(
        use_cpu_initialization=True, params_dtype=torch.float32)
    mpu.initialize_model_parallel(TP, 1)
    rank = mpu.get_tensor_model_parallel_rank()
    assert mpu.get_tensor_model_parallel_world_size() == TP
    assert mpu.get_data_parallel_world_size() == 1
    mpu.model_parallel_cuda_manual_seed(123)
    torch.manual_seed(0)  # every rank draws the same "master" tensors

    # ColumnParallelLinear, gathered output, with a non-zero bias.
    col = mpu.ColumnParallelLinear(8, 12, gather_output=True,
                                   keep_master_weight_for_test=True)
    full_bias = torch.randn(12)
    with torch.no_grad():
        col.bias.copy_(full_bias.chunk(TP)[rank])
    x = torch.randn(3, 5, 8, requires_grad=True)
    y, b = col(x)
    assert b is None and col.weight.partition_dim == 0
    x_ref = x.detach().clone().requires_grad_()
    w_ref = col.master_weight.clone().requires_grad_()
    y_ref = F.linear(x_ref, w_ref, full_bias)
    close(y, y_ref, 'column forward')
    y.pow(2).sum().backward()
    y_ref.pow(2).sum().backward()
    close(x.grad, x_ref.grad, 'column input grad')
    close(col.weight.grad, w_ref.grad.chunk(TP, dim=0)[rank], 'column weight grad')

    # RowParallelLinear from a full input, bias added after the reduce.
    row = mpu.RowParallelLinear(12, 8, input_is_parallel=False,
                                keep_master_weight_for_test=True)
    with torch.no_grad():
        row.bias.copy_(torch.randn(8))
    x = torch.randn(3, 5, 12, requires_grad=True)
    y, b = row(x)
    assert b is None and row.weight.partition_dim == 1
    x_ref = x.detach().clone().requires_grad_()
    w_ref = row.master_weight.clone().requires_grad_()
    y_ref = F.linear(x_ref, w_ref, row.bias.detach())
    close(y, y_ref, 'row forward')
    y.pow(2).sum().backward()
    y_ref.pow(2).sum().backward()
    close(x.grad, x_ref.grad, 'row input grad')
    close(row.weight.grad, w_ref.grad.chunk(TP, dim=1)[rank], 'row weight grad')

    # Column -> Row without gathering (the MLP pattern), skip_bias_add.
    c2 = mpu.ColumnParallelLinear(8, 16, gather_output=False, skip_bias_add=True,
                                  keep_master_weight_for_test=True)
    r2 = mpu.RowParallelLinear(16, 8, input_is_parallel=True, skip_bias_add=True,
                               keep_master_weight_for_test=True)
    x = torch.randn(4, 8)
    h, hb = c2(x)
    assert hb is c2.bias and h.shape == (4, 8)
    out, ob = r2(h + hb)
    assert ob is r2.bias
    close(out, F.linear(F.linear(x, c2.master_weight), r2.master_weight), 'mlp')

    # bias=False everywhere.
    nb_c = mpu.ColumnParallelLinear(8, 4, bias=False, skip_bias_add=True)
    nb_r = mpu.RowParallelLinear(4, 8, bias=False, skip_bias_add=True)
    assert nb_c.bias is None and nb_r.bias is None
    assert nb_c(x)[1] is None and nb_r(torch.randn(4, 4))[1] is None
    assert nb_r(torch.randn(4, 4))[0].shape == (4, 8)

    # Strided split: blocks r, r + TP, ... of the master weight.
    strided = mpu.ColumnParallelLinear(8, 12, stride=2, gather_output=False,
                                       keep_master_weight_for_test=True)
    blocks = strided.master_weight.split(3, dim=0)
    close(strided.weight.data, torch.cat([blocks[rank], blocks[rank + TP]]),
          'stride-2 slice')
    assert strided.weight.partition_stride == 2

    # VocabParallelEmbedding.
    emb = mpu.VocabParallelEmbedding(16, 6)
    full = gather_dim(emb.weight.data, 0)
    ids = torch.randint(0, 16, (3, 7))
    close(emb(ids), F.embedding(ids, full), 'vocab parallel embedding')

    # Vocab-parallel cross entropy (forward and gradient).
    logits = torch.randn(3, 7, 16)
    target = torch.randint(0, 16, (3, 7))
    local = logits.chunk(TP, dim=-1)[rank].clone().requires_grad_()
    loss = mpu.vocab_parallel_cross_entropy(local, target)
    ref_logits = logits.clone().requires_grad_()
    ref = F.cross_entropy(ref_logits.view(-1, 16), target.view(-1),
                          reduction='none').view(3, 7)
    close(loss, ref, 'cross entropy')
    loss.sum().backward()
    ref.sum().backward()
    close(local.grad, ref_logits.grad.chunk(TP, dim=-1)[rank], 'cross entropy grad')

    # Mappings and broadcast_data.
    t = torch.randn(2, 6)
    close(mpu.gather_from_tensor_model_parallel_region(
        mpu.scatter_to_tensor_model_parallel_region(t)), t, 'scatter/gather')
    data = {'text': torch.arange(12).view(3, 4)} if rank == 0 else None
    got = mpu.broadcast_data(['text'], data, torch.int64)['text']
    assert torch.equal(got, torch.arange(12).view(3, 4)), got

    # The tensor-parallel RNG stream differs per rank, the default one not.
    with mpu.get_cuda_rng_tracker().fork():
        tp_draw = torch.rand(4)
    dp_draw = torch.rand(4)
    others = gather_dim(tp_draw, 0).view(TP, 4)
    assert not torch.equal(others[0], others[1]), 'tracker streams coincide'
    shared = gather_dim(dp_draw, 0).view(TP, 4)
    assert torch.equal(shared[0], shared[1]), 'default streams differ'

    # Layout helpers.
    assert torch.distributed.get_rank() == mpu.get_tensor_model_parallel_src_rank() + rank
    assert mpu.is_pipeline_first_stage() and mpu.is_pipeline_last_stage()
    torch.distributed.barrier()
    print(f'MPU-OK {rank}', flush=True)
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
