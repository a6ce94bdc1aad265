# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Process groups for tensor, pipeline and data parallelism.

Ranks are laid out with the tensor-parallel index varying fastest, then the
data-parallel index, then the pipeline stage, so that
rank = pp * (dp_size * tp_size) + dp * tp_size + tp.
That is the same order DeepSpeed's PipeModelDataParallelTopology uses.
"""

import torch

from .utils import ensure_divisibility

_TENSOR_MODEL_PARALLEL_GROUP = None
_PIPELINE_MODEL_PARALLEL_GROUP = None
_MODEL_PARALLEL_GROUP = None
_EMBEDDING_GROUP = None
_DATA_PARALLEL_GROUP = None

_VIRTUAL_PIPELINE_MODEL_PARALLEL_RANK = None
_VIRTUAL_PIPELINE_MODEL_PARALLEL_WORLD_SIZE = None

# Optional overrides (used when groups are not built, e.g. in unit tests).
_MPU_TENSOR_MODEL_PARALLEL_WORLD_SIZE = None
_MPU_PIPELINE_MODEL_PARALLEL_WORLD_SIZE = None
_MPU_TENSOR_MODEL_PARALLEL_RANK = None
_MPU_PIPELINE_MODEL_PARALLEL_RANK = None

_PIPELINE_GLOBAL_RANKS = None


def is_unitialized():
    return _DATA_PARALLEL_GROUP is None


def initialize_model_parallel(tensor_model_parallel_size_=1,
                              pipeline_model_parallel_size_=1,
                              virtual_pipeline_model_parallel_size_=None):
    """Build every process group this rank takes part in."""
    assert torch.distributed.is_initialized()
    world_size = torch.distributed.get_world_size()
    rank = torch.distributed.get_rank()
    tp = min(tensor_model_parallel_size_, world_size)
    pp = min(pipeline_model_parallel_size_, world_size)
    ensure_divisibility(world_size, tp * pp)
    dp = world_size // (tp * pp)
    if rank == 0:
        print(f'> model parallel layout: tensor={tp} pipeline={pp} data={dp}',
              flush=True)

    global _VIRTUAL_PIPELINE_MODEL_PARALLEL_RANK
    global _VIRTUAL_PIPELINE_MODEL_PARALLEL_WORLD_SIZE
    if virtual_pipeline_model_parallel_size_ is not None:
        _VIRTUAL_PIPELINE_MODEL_PARALLEL_RANK = 0
        _VIRTUAL_PIPELINE_MODEL_PARALLEL_WORLD_SIZE = \
            virtual_pipeline_model_parallel_size_

    def rank_of(p, d, t):
        return (p * dp + d) * tp + t

    global _DATA_PARALLEL_GROUP, _MODEL_PARALLEL_GROUP
    global _TENSOR_MODEL_PARALLEL_GROUP, _PIPELINE_MODEL_PARALLEL_GROUP
    global _EMBEDDING_GROUP, _PIPELINE_GLOBAL_RANKS
    assert _DATA_PARALLEL_GROUP is None, 'model parallel groups already built'

    # Every rank must call new_group for every group, in the same order.
    for p in range(pp):
        for t in range(tp):
            ranks = [rank_of(p, d, t) for d in range(dp)]
            group = torch.distributed.new_group(ranks)
            if rank in ranks:
                _DATA_PARALLEL_GROUP = group
    for d in range(dp):
        ranks = [rank_of(p, d, t) for p in range(pp) for t in range(tp)]
        group = torch.distributed.new_group(ranks)
        if rank in ranks:
            _MODEL_PARALLEL_GROUP = group
    for p in range(pp):
        for d in range(dp):
            ranks = [rank_of(p, d, t) for t in range(tp)]
            group = torch.distributed.new_group(ranks)
            if rank in ranks:
                _TENSOR_MODEL_PARALLEL_GROUP = group
    for d in range(dp):
        for t in range(tp):
            ranks = [rank_of(p, d, t) for p in range(pp)]
            group = torch.distributed.new_group(ranks)
            if rank in ranks:
                _PIPELINE_MODEL_PARALLEL_GROUP = group
                _PIPELINE_GLOBAL_RANKS = ranks
            # First and last stage share the tied word embeddings.
            ends = sorted({ranks[0], ranks[-1]})
            group = torch.distributed.new_group(ends)
            if rank in ends:
                _EMBEDDING_GROUP = group


def model_parallel_is_initialized():
    return None not in (_TENSOR_MODEL_PARALLEL_GROUP,
                        _PIPELINE_MODEL_PARALLEL_GROUP, _DATA_PARALLEL_GROUP)


def _checked(group, what):
    assert group is not None, f'{what} group is not initialized'
    return group


def get_model_parallel_group():
    return _checked(_MODEL_PARALLEL_GROUP, 'model parallel')


def get_tensor_model_parallel_group():
    return _checked(_TENSOR_MODEL_PARALLEL_GROUP, 'tensor model parallel')


def get_pipeline_model_parallel_group():
    return _checked(_PIPELINE_MODEL_PARALLEL_GROUP, 'pipeline model parallel')


def get_data_parallel_group():
    return _checked(_DATA_PARALLEL_GROUP, 'data parallel')


def get_embedding_group():
    return _checked(_EMBEDDING_GROUP, 'embedding')


def set_tensor_model_parallel_world_size(world_size):
    global _MPU_TENSOR_MODEL_PARALLEL_WORLD_SIZE
    _MPU_TENSOR_MODEL_PARALLEL_WORLD_SIZE = world_size


def set_pipeline_model_parallel_world_size(world_size):
    global _MPU_PIPELINE_MODEL_PARALLEL_WORLD_SIZE
    _MPU_PIPELINE_MODEL_PARALLEL_WORLD_SIZE = world_size


def set_tensor_model_parallel_rank(rank):
    global _MPU_TENSOR_MODEL_PARALLEL_RANK
    _MPU_TENSOR_MODEL_PARALLEL_RANK = rank


def set_pipeline_model_parallel_rank(rank):
    global _MPU_PIPELINE_MODEL_PARALLEL_RANK
    _MPU_PIPELINE_MODEL_PARALLEL_RANK = rank


def get_tensor_model_parallel_world_size():
    if _MPU_TENSOR_MODEL_PARALLEL_WORLD_SIZE is not None:
        return _MPU_TENSOR_MODEL_PARALLEL_WORLD_SIZE
    return torch.distributed.get_world_size(
        group=get_tensor_model_parallel_group())


def get_pipeline_model_parallel_world_size():
    if _MPU_PIPELINE_MODEL_PARALLEL_WORLD_SIZE is not None:
        return _MPU_PIPELINE_MODEL_PARALLEL_WORLD_SIZE
    return torch.distributed.get_world_size(
        group=get_pipeline_model_parallel_group())


def get_tensor_model_parallel_rank():
    if _MPU_TENSOR_MODEL_PARALLEL_RANK is not None:
        return _MPU_TENSOR_MODEL_PARALLEL_RANK
    return torch.distributed.get_rank(group=get_tensor_model_parallel_group())


def get_pipeline_model_parallel_rank():
    if _MPU_PIPELINE_MODEL_PARALLEL_RANK is not None:
        return _MPU_PIPELINE_MODEL_PARALLEL_RANK
    return torch.distributed.get_rank(
        group=get_pipeline_model_parallel_group())


def get_model_parallel_world_size():
    # DeepSpeed's engine (no pipeline) treats "model parallel" as tensor parallel.
    assert get_pipeline_model_parallel_world_size() == 1, \
        'get_model_parallel_world_size needs pipeline parallel size 1'
    return get_tensor_model_parallel_world_size()


def get_model_parallel_rank():
    assert get_pipeline_model_parallel_world_size() == 1, \
        'get_model_parallel_rank needs pipeline parallel size 1'
    return get_tensor_model_parallel_rank()


def get_virtual_pipeline_model_parallel_rank():
    return _VIRTUAL_PIPELINE_MODEL_PARALLEL_RANK


def set_virtual_pipeline_model_parallel_rank(rank):
    global _VIRTUAL_PIPELINE_MODEL_PARALLEL_RANK
    _VIRTUAL_PIPELINE_MODEL_PARALLEL_RANK = rank


def get_virtual_pipeline_model_parallel_world_size():
    return _VIRTUAL_PIPELINE_MODEL_PARALLEL_WORLD_SIZE


def is_pipeline_first_stage(ignore_virtual=False):
    if not ignore_virtual and \
            get_virtual_pipeline_model_parallel_world_size() is not None and \
            get_virtual_pipeline_model_parallel_rank() != 0:
        return False
    return get_pipeline_model_parallel_rank() == 0


def is_pipeline_last_stage(ignore_virtual=False):
    vsize = get_virtual_pipeline_model_parallel_world_size()
    if not ignore_virtual and vsize is not None and \
            get_virtual_pipeline_model_parallel_rank() != vsize - 1:
        return False
    return get_pipeline_model_parallel_rank() == \
        get_pipeline_model_parallel_world_size() - 1


def get_tensor_model_parallel_src_rank():
    """Global rank of tensor-parallel rank 0 in this rank's group."""
    size = get_tensor_model_parallel_world_size()
    return (torch.distributed.get_rank() // size) * size


def _pipeline_ranks():
    assert _PIPELINE_GLOBAL_RANKS is not None, \
        'pipeline parallel group is not initialized'
    return _PIPELINE_GLOBAL_RANKS


def get_pipeline_model_parallel_first_rank():
    return _pipeline_ranks()[0]


def get_pipeline_model_parallel_last_rank():
    return _pipeline_ranks()[-1]


def get_pipeline_model_parallel_next_rank():
    ranks = _pipeline_ranks()
    return ranks[(get_pipeline_model_parallel_rank() + 1) % len(ranks)]


def get_pipeline_model_parallel_prev_rank():
    ranks = _pipeline_ranks()
    return ranks[(get_pipeline_model_parallel_rank() - 1) % len(ranks)]


def get_data_parallel_world_size():
    return torch.distributed.get_world_size(group=get_data_parallel_group())


def get_data_parallel_rank():
    return torch.distributed.get_rank(group=get_data_parallel_group())


def destroy_model_parallel():
    global _TENSOR_MODEL_PARALLEL_GROUP, _PIPELINE_MODEL_PARALLEL_GROUP
    global _DATA_PARALLEL_GROUP, _MODEL_PARALLEL_GROUP, _EMBEDDING_GROUP
    global _PIPELINE_GLOBAL_RANKS
    _TENSOR_MODEL_PARALLEL_GROUP = None
    _PIPELINE_MODEL_PARALLEL_GROUP = None
    _DATA_PARALLEL_GROUP = None
    _MODEL_PARALLEL_GROUP = None
    _EMBEDDING_GROUP = None
    _PIPELINE_GLOBAL_RANKS = None
