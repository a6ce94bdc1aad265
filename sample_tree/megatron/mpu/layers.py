# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Tensor-parallel embedding and linear layers.

Weights are stored transposed, as F.linear expects: [out, in].
ColumnParallelLinear splits dim 0 (outputs), RowParallelLinear splits dim 1
(inputs), VocabParallelEmbedding splits the vocabulary (dim 0).
"""

import torch
import torch.nn.functional as F
import torch.nn.init as init
from torch.nn.parameter import Parameter

import deepspeed.runtime.activation_checkpointing.checkpointing as ds_checkpointing
from deepspeed.accelerator import get_accelerator

from megatron import get_args
from .initialize import (get_tensor_model_parallel_rank,
                         get_tensor_model_parallel_world_size)
from .mappings import (copy_to_tensor_model_parallel_region,
                       gather_from_tensor_model_parallel_region,
                       reduce_from_tensor_model_parallel_region,
                       scatter_to_tensor_model_parallel_region)
from .random import get_cuda_rng_tracker
from .utils import divide, VocabUtility

_MODEL_PARALLEL_ATTRIBUTE_DEFAULTS = {'tensor_model_parallel': False,
                                      'partition_dim': -1,
                                      'partition_stride': 1}


def param_is_not_tensor_parallel_duplicate(param):
    return getattr(param, 'tensor_model_parallel', False) or \
        get_tensor_model_parallel_rank() == 0


def set_tensor_model_parallel_attributes(tensor, is_parallel, dim, stride):
    for name in _MODEL_PARALLEL_ATTRIBUTE_DEFAULTS:
        assert not hasattr(tensor, name), f'{name} is already set'
    tensor.tensor_model_parallel = is_parallel
    tensor.partition_dim = dim
    tensor.partition_stride = stride


def set_defaults_if_not_set_tensor_model_parallel_attributes(tensor):
    for name, value in _MODEL_PARALLEL_ATTRIBUTE_DEFAULTS.items():
        if not hasattr(tensor, name):
            setattr(tensor, name, value)


def copy_tensor_model_parallel_attributes(destination_tensor, source_tensor):
    for name in _MODEL_PARALLEL_ATTRIBUTE_DEFAULTS:
        if hasattr(source_tensor, name):
            setattr(destination_tensor, name, getattr(source_tensor, name))


def _rng_tracker():
    if ds_checkpointing.is_configured():
        return ds_checkpointing.get_cuda_rng_tracker()
    return get_cuda_rng_tracker()


def _initialize_affine_weight_gpu(weight, init_method,
                                  partition_dim, stride=1):
    """Initialise only the local slice, under the tensor-parallel RNG."""
    set_tensor_model_parallel_attributes(tensor=weight, is_parallel=True,
                                         dim=partition_dim, stride=stride)
    with _rng_tracker().fork():
        init_method(weight)


def _initialize_affine_weight_cpu(weight, output_size, input_size,
                                  per_partition_size, partition_dim,
                                  init_method, stride=1,
                                  return_master_weight=False):
    """Initialise the full weight identically on every rank, keep a slice.

    The full weight is cut into stride * world_size equal blocks along
    partition_dim; rank r keeps blocks r, r + world_size, ...
    """
    set_tensor_model_parallel_attributes(tensor=weight, is_parallel=True,
                                         dim=partition_dim, stride=stride)
    master_weight = torch.empty(output_size, input_size, dtype=torch.float,
                                requires_grad=False)
    init_method(master_weight)
    master_weight = master_weight.to(dtype=get_args().params_dtype)

    block = divide(per_partition_size, stride)
    blocks = torch.split(master_weight, block, dim=partition_dim)
    rank = get_tensor_model_parallel_rank()
    world_size = get_tensor_model_parallel_world_size()
    with torch.no_grad():
        weight.copy_(torch.cat(blocks[rank::world_size], dim=partition_dim))
    return master_weight if return_master_weight else None


def _new_param(*shape, on_cpu):
    args = get_args()
    device = 'cpu' if on_cpu else get_accelerator().current_device_name()
    return Parameter(torch.empty(*shape, device=device,
                                 dtype=args.params_dtype))


class VocabParallelEmbedding(torch.nn.Module):
    """Embedding table split along the vocabulary."""

    def __init__(self, num_embeddings, embedding_dim,
                 init_method=init.xavier_normal_):
        super(VocabParallelEmbedding, self).__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = None
        self.max_norm = None
        self.norm_type = 2.
        self.scale_grad_by_freq = False
        self.sparse = False
        self._weight = None
        self.tensor_model_parallel_size = get_tensor_model_parallel_world_size()
        self.vocab_start_index, self.vocab_end_index = \
            VocabUtility.vocab_range_from_global_vocab_size(
                self.num_embeddings, get_tensor_model_parallel_rank(),
                self.tensor_model_parallel_size)
        self.num_embeddings_per_partition = \
            self.vocab_end_index - self.vocab_start_index

        args = get_args()
        self.weight = _new_param(self.num_embeddings_per_partition,
                                 self.embedding_dim,
                                 on_cpu=args.use_cpu_initialization)
        if args.use_cpu_initialization:
            _initialize_affine_weight_cpu(
                self.weight, self.num_embeddings, self.embedding_dim,
                self.num_embeddings_per_partition, 0, init_method)
        else:
            _initialize_affine_weight_gpu(self.weight, init_method,
                                          partition_dim=0, stride=1)

    def forward(self, input_):
        if self.tensor_model_parallel_size > 1:
            outside = (input_ < self.vocab_start_index) | \
                      (input_ >= self.vocab_end_index)
            local_ids = (input_ - self.vocab_start_index).masked_fill(outside, 0)
        else:
            local_ids = input_
        output_parallel = F.embedding(local_ids, self.weight, self.padding_idx,
                                      self.max_norm, self.norm_type,
                                      self.scale_grad_by_freq, self.sparse)
        if self.tensor_model_parallel_size > 1:
            output_parallel = output_parallel.masked_fill(
                outside.unsqueeze(-1), 0.0)
        return reduce_from_tensor_model_parallel_region(output_parallel)


class ColumnParallelLinear(torch.nn.Module):
    """Y = XA + b with A split by columns; each rank computes Y_i = X A_i."""

    def __init__(self, input_size, output_size, bias=True, gather_output=True,
                 init_method=init.xavier_normal_, stride=1,
                 keep_master_weight_for_test=False,
                 skip_bias_add=False):
        super(ColumnParallelLinear, self).__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.gather_output = gather_output
        world_size = get_tensor_model_parallel_world_size()
        self.output_size_per_partition = divide(output_size, world_size)
        self.skip_bias_add = skip_bias_add

        args = get_args()
        on_cpu = args.use_cpu_initialization
        self.weight = _new_param(self.output_size_per_partition,
                                 self.input_size, on_cpu=on_cpu)
        self.master_weight = None
        if on_cpu:
            self.master_weight = _initialize_affine_weight_cpu(
                self.weight, self.output_size, self.input_size,
                self.output_size_per_partition, 0, init_method,
                stride=stride, return_master_weight=keep_master_weight_for_test)
        else:
            _initialize_affine_weight_gpu(self.weight, init_method,
                                          partition_dim=0, stride=stride)
        if bias:
            self.bias = _new_param(self.output_size_per_partition, on_cpu=on_cpu)
            set_tensor_model_parallel_attributes(self.bias, True, 0, stride)
            with torch.no_grad():
                self.bias.zero_()
        else:
            self.register_parameter('bias', None)

    def forward(self, input_):
        input_parallel = copy_to_tensor_model_parallel_region(input_)
        bias = self.bias if not self.skip_bias_add else None
        output_parallel = F.linear(input_parallel, self.weight, bias)
        if self.gather_output:
            output = gather_from_tensor_model_parallel_region(output_parallel)
        else:
            output = output_parallel
        output_bias = self.bias if self.skip_bias_add else None
        return output, output_bias


class RowParallelLinear(torch.nn.Module):
    """Y = XA + b with A split by rows and X by columns; partial products
    are summed with an all-reduce.  The bias is not split."""

    def __init__(self, input_size, output_size, bias=True,
                 input_is_parallel=False,
                 init_method=init.xavier_normal_, stride=1,
                 keep_master_weight_for_test=False,
                 skip_bias_add=False):
        super(RowParallelLinear, self).__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.input_is_parallel = input_is_parallel
        world_size = get_tensor_model_parallel_world_size()
        self.input_size_per_partition = divide(input_size, world_size)
        self.skip_bias_add = skip_bias_add

        args = get_args()
        on_cpu = args.use_cpu_initialization
        self.weight = _new_param(self.output_size,
                                 self.input_size_per_partition, on_cpu=on_cpu)
        self.master_weight = None
        if on_cpu:
            self.master_weight = _initialize_affine_weight_cpu(
                self.weight, self.output_size, self.input_size,
                self.input_size_per_partition, 1, init_method,
                stride=stride, return_master_weight=keep_master_weight_for_test)
        else:
            _initialize_affine_weight_gpu(self.weight, init_method,
                                          partition_dim=1, stride=stride)
        if bias:
            self.bias = _new_param(self.output_size, on_cpu=on_cpu)
            with torch.no_grad():
                self.bias.zero_()
        else:
            self.register_parameter('bias', None)

    def forward(self, input_):
        if self.input_is_parallel:
            input_parallel = input_
        else:
            input_parallel = scatter_to_tensor_model_parallel_region(input_)
        output_parallel = F.linear(input_parallel, self.weight)
        output_ = reduce_from_tensor_model_parallel_region(output_parallel)
        if self.skip_bias_add:
            return output_, self.bias
        output = output_ + self.bias if self.bias is not None else output_
        return output, None
