"""HF weights <-> the ported tree's Megatron-DeepSpeed checkpoints, both ways, bit-exact, streamed.

One job per module:
- layout.py: where each weight lives in the ported tree (read from its source and the spec);
- shape.py: the numbers that fix the tensors' shapes;
- tensors.py: HF tensors <-> the tree's full layout, a layer at a time (pure copies);
- sharding.py: full <-> what each tensor-parallel rank holds;
- experts.py: the MoE difference's router and experts (HF's two spellings, DeepSpeed's expert files);
- checkpoint.py: the DeepSpeed checkpoint files the tree's load_checkpoint reads, written and read part by part;
- hf_dir.py: HF model directories, read tensor by tensor and written shard by shard;
- fp8.py: block-fp8 checkpoints, dequantized to bf16 as they are read;
- stream.py: plan every file on the meta device, then fill it a tensor at a time; the figures;
- output.py: the output folder (space checked first, written under another name, renamed when complete);
- torch_files.py, safetensors_files.py: the two file formats, one tensor at a time;
- run.py: the two conversions as `porter convert` runs them, carrying every number.
"""

from porter.convert.checkpoint import TAG, CheckpointReader, flatten_state, read_checkpoint, write_checkpoint
from porter.convert.hf_dir import HFDir, read_hf, write_hf
from porter.convert.run import Port, checkpoint_from_hf, hf_config_for, hf_from_checkpoint
from porter.convert.shape import ModelShape
from porter.convert.sharding import shard
from porter.convert.tensors import MegatronWeights, hf_to_megatron, megatron_to_hf

__all__ = [
    "TAG", "CheckpointReader", "HFDir", "MegatronWeights", "ModelShape", "Port", "checkpoint_from_hf",
    "flatten_state", "hf_config_for", "hf_from_checkpoint", "hf_to_megatron", "megatron_to_hf", "read_checkpoint",
    "read_hf", "shard", "write_checkpoint", "write_hf",
]
