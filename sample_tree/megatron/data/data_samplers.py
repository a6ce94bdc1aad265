# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Batch samplers that resume from consumed_samples and split each global
micro-batch across data-parallel ranks."""

import torch

from megatron import get_args
from megatron import mpu


def build_pretraining_data_loader(dataset, consumed_samples):
    if dataset is None:
        return None
    args = get_args()
    common = dict(total_samples=len(dataset),
                  consumed_samples=consumed_samples,
                  micro_batch_size=args.micro_batch_size,
                  data_parallel_rank=mpu.get_data_parallel_rank(),
                  data_parallel_size=mpu.get_data_parallel_world_size())
    if args.dataloader_type == 'single':
        batch_sampler = MegatronPretrainingSampler(**common)
    elif args.dataloader_type == 'cyclic':
        batch_sampler = MegatronPretrainingRandomSampler(**common)
    else:
        raise Exception(f'{args.dataloader_type} dataloader type is not supported.')
    return torch.utils.data.DataLoader(dataset,
                                       batch_sampler=batch_sampler,
                                       num_workers=args.num_workers,
                                       pin_memory=torch.cuda.is_available())


class MegatronPretrainingSampler:
    """One ordered pass over the dataset, dropping the incomplete tail."""

    def __init__(self, total_samples, consumed_samples, micro_batch_size,
                 data_parallel_rank, data_parallel_size, drop_last=True):
        assert total_samples > 0, 'no samples to consume'
        assert consumed_samples < total_samples, 'dataset already consumed'
        assert 0 <= data_parallel_rank < data_parallel_size
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.micro_batch_times_data_parallel_size = \
            micro_batch_size * data_parallel_size
        self.drop_last = drop_last

    def __len__(self):
        return self.total_samples

    def get_start_end_idx(self):
        start = self.data_parallel_rank * self.micro_batch_size
        return start, start + self.micro_batch_size

    def __iter__(self):
        step = self.micro_batch_times_data_parallel_size
        lo, hi = self.get_start_end_idx()
        for first in range(self.consumed_samples, self.total_samples, step):
            batch = list(range(first, min(first + step, self.total_samples)))
            if len(batch) == step:
                yield batch[lo:hi]
            elif not self.drop_last and len(batch) > lo:
                yield batch[lo:hi]


class MegatronPretrainingRandomSampler:
    """Endless shuffled epochs; each data-parallel rank reads its own bucket."""

    def __init__(self, total_samples, consumed_samples, micro_batch_size,
                 data_parallel_rank, data_parallel_size):
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.micro_batch_times_data_parallel_size = \
            micro_batch_size * data_parallel_size
        self.last_batch_size = \
            total_samples % self.micro_batch_times_data_parallel_size
        assert total_samples > 0

    def __len__(self):
        return self.total_samples

    def __iter__(self):
        active = self.total_samples - self.last_batch_size
        bucket = active // self.data_parallel_size
        while True:
            epoch = self.consumed_samples // active
            done_in_epoch = self.consumed_samples % active
            g = torch.Generator()
            g.manual_seed(epoch)
            start = self.data_parallel_rank * bucket
            order = (start + torch.randperm(bucket, generator=g)).tolist()
            skip = done_in_epoch // self.data_parallel_size
            for i in range(skip, bucket - self.micro_batch_size + 1,
                           self.micro_batch_size):
                self.consumed_samples += self.micro_batch_times_data_parallel_size
                yield order[i:i + self.micro_batch_size]
            self.consumed_samples = (epoch + 1) * active
