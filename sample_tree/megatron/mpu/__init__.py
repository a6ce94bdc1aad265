# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Model-parallel utilities: process groups, parallel layers, RNG, data."""

from .cross_entropy import vocab_parallel_cross_entropy
from .data import broadcast_data
from .initialize import (
    destroy_model_parallel, initialize_model_parallel, is_unitialized,
    model_parallel_is_initialized,
    get_data_parallel_group, get_data_parallel_rank,
    get_data_parallel_world_size, get_embedding_group,
    get_model_parallel_group, get_model_parallel_rank,
    get_model_parallel_world_size,
    get_tensor_model_parallel_group, get_tensor_model_parallel_rank,
    get_tensor_model_parallel_src_rank, get_tensor_model_parallel_world_size,
    set_tensor_model_parallel_rank, set_tensor_model_parallel_world_size,
    get_pipeline_model_parallel_group, get_pipeline_model_parallel_rank,
    get_pipeline_model_parallel_world_size,
    get_pipeline_model_parallel_first_rank,
    get_pipeline_model_parallel_last_rank,
    get_pipeline_model_parallel_next_rank,
    get_pipeline_model_parallel_prev_rank,
    set_pipeline_model_parallel_rank, set_pipeline_model_parallel_world_size,
    get_virtual_pipeline_model_parallel_rank,
    set_virtual_pipeline_model_parallel_rank,
    is_pipeline_first_stage, is_pipeline_last_stage,
)
from .layers import (
    ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
    copy_tensor_model_parallel_attributes,
    param_is_not_tensor_parallel_duplicate,
    set_defaults_if_not_set_tensor_model_parallel_attributes,
    set_tensor_model_parallel_attributes,
)
from .mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_tensor_model_parallel_region,
    reduce_from_tensor_model_parallel_region,
    scatter_to_tensor_model_parallel_region,
)
from .random import (
    checkpoint, get_cuda_rng_tracker, model_parallel_cuda_manual_seed,
    init_checkpointed_activations_memory_buffer,
    reset_checkpointed_activations_memory_buffer,
    gather_split_1d_tensor, split_tensor_into_1d_equal_chunks,
)
from .utils import divide, split_tensor_along_last_dim, VocabUtility
