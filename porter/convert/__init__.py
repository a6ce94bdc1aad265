"""HF weights <-> the ported tree's Megatron-DeepSpeed checkpoints, both ways, bit-exact.

One job per module:
- layout.py: where each weight lives in the ported tree (read from its source and the spec);
- shape.py: the numbers that fix the tensors' shapes;
- tensors.py: HF state dict <-> one full copy in the tree's layout (pure copies);
- sharding.py: full <-> what each tensor-parallel rank holds;
- experts.py: the MoE difference's router and experts (HF's two spellings, DeepSpeed's expert files);
- checkpoint.py: the DeepSpeed checkpoint files the tree's load_checkpoint reads;
- hf_dir.py: HF model directories;
- run.py: the two conversions as `porter convert` runs them, carrying every number.
"""

from porter.convert.checkpoint import TAG, flatten_state, read_checkpoint, write_checkpoint
from porter.convert.hf_dir import read_hf, write_hf
from porter.convert.run import Port, checkpoint_from_hf, hf_config_for, hf_from_checkpoint
from porter.convert.shape import ModelShape
from porter.convert.sharding import shard, unshard
from porter.convert.tensors import MegatronWeights, hf_to_megatron, megatron_to_hf

__all__ = [
    "TAG", "MegatronWeights", "ModelShape", "Port", "checkpoint_from_hf", "flatten_state", "hf_config_for",
    "hf_from_checkpoint", "hf_to_megatron", "megatron_to_hf", "read_checkpoint", "read_hf", "shard", "unshard",
    "write_checkpoint", "write_hf",
]
