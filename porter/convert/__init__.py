"""HF weights <-> the ported tree's Megatron-DeepSpeed checkpoints, both ways, bit-exact, streamed.

What each tensor of a transformer layer is made of, and how ranks hold it, is porter.weights'
(the base slots as the port's differences fill them); where the rest lives in the tree is
porter.layout's (read by porter.profile.layout). One job per module here:
- tensors.py: HF tensors <-> the tree's full layout, a layer at a time (pure copies);
- sharding.py: full <-> what each tensor-parallel rank holds;
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
from porter.convert.sharding import shard
from porter.convert.tensors import MegatronWeights, Take, hf_parts, hf_to_megatron, megatron_to_hf
from porter.weights import ModelShape, ModelWeights

__all__ = [
    "TAG", "CheckpointReader", "HFDir", "MegatronWeights", "ModelShape", "ModelWeights", "Port", "checkpoint_from_hf",
    "flatten_state", "hf_config_for", "hf_from_checkpoint", "hf_to_megatron", "megatron_to_hf", "read_checkpoint",
    "read_hf", "shard", "write_checkpoint", "write_hf", "Take", "hf_parts",
]
