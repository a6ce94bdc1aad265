# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Small helpers shared by the model-parallel code."""

import torch


def ensure_divisibility(numerator, denominator):
    assert numerator % denominator == 0, \
        f'{numerator} does not divide evenly by {denominator}'


def divide(numerator, denominator):
    ensure_divisibility(numerator, denominator)
    return numerator // denominator


def split_tensor_along_last_dim(tensor, num_partitions,
                                contiguous_split_chunks=False):
    """Cut tensor into num_partitions equal views along its last axis."""
    chunk = divide(tensor.size(-1), num_partitions)
    pieces = torch.split(tensor, chunk, dim=tensor.dim() - 1)
    if contiguous_split_chunks:
        return tuple(p.contiguous() for p in pieces)
    return pieces


class VocabUtility:
    """Index range [first, last) of the vocabulary slice owned by a rank."""

    @staticmethod
    def vocab_range_from_per_partition_vocab_size(per_partition_vocab_size,
                                                  rank, world_size):
        first = rank * per_partition_vocab_size
        return first, first + per_partition_vocab_size

    @staticmethod
    def vocab_range_from_global_vocab_size(global_vocab_size, rank, world_size):
        per_rank = divide(global_vocab_size, world_size)
        return VocabUtility.vocab_range_from_per_partition_vocab_size(
            per_rank, rank, world_size)
