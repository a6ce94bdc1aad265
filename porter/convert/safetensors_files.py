"""safetensors files one tensor at a time: read through `safe_open`, written by streaming.

Reading: each `read` opens the file with `safe_open` and takes one tensor, which the library
maps from the file: it is read as it is used, and its pages go with it (one `safe_open` kept
for a whole file would keep every page it read until it closes).

Writing: a safetensors file is an 8-byte header length, a JSON header (each tensor's dtype,
shape and byte range) and the tensors' bytes. The library writes a file only from tensors all
in memory (`save_file`), so porter writes the header itself from the planned tensors (names,
shapes, dtypes: known before any byte is read), sizes the file, and puts each tensor's bytes
at its range when it is ready (`file_bytes.write_at`). The sharding into files is
huggingface_hub's `split_torch_state_dict_into_shards`, the one `save_pretrained` uses, with
its `max_shard_size` spelling ("5GB", "500MB"); `safe_open` and `from_pretrained` read the
result like any other.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch


def names(path: Path) -> list[str]:
    """The tensor names of a safetensors file (its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def read(path: Path, name: str) -> torch.Tensor:
    """One tensor of a safetensors file, mapped from the file (read as it is used)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name)


def meta(path: Path, name: str) -> torch.Tensor:
    """A tensor's shape and dtype, on the meta device (nothing read)."""
    tensor = read(path, name)  # mapped, not touched
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")


def dtype_code(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype ("BF16" for torch.bfloat16), as the library spells it."""
    from safetensors import TensorSpec

    return TensorSpec(dtype=str(dtype).removeprefix("torch."), shape=[0], data_ptr=0, data_len=0).dtype


def split(tensors: dict[str, torch.Tensor], max_shard_size: int | str):
    """save_pretrained's split of tensors (meta ones will do) into files of at most max_shard_size
    (a single larger tensor gets a file of its own): huggingface_hub's StateDictSplit."""
    from huggingface_hub import split_torch_state_dict_into_shards

    sized = {name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in tensors.items()}
    return split_torch_state_dict_into_shards(sized, filename_pattern="model{suffix}.safetensors",
                                              max_shard_size=max_shard_size)


def write_header(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
                 ) -> dict[str, int]:
    """Write a safetensors file's header for tensors (in this order; meta ones will do) and size the
    file for their bytes; returns where each tensor's bytes start."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    start = 0
    for name, tensor in tensors.items():
        end = start + tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtype_code(tensor.dtype), "shape": list(tensor.shape), "data_offsets": [start, end]}
        start = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the library's alignment of the data
    base = 8 + len(text)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.truncate(base + start)
    return {name: base + entry["data_offsets"][0] for name, entry in header.items() if name != "__metadata__"}


def index(split_result, total_parameters: int) -> dict:
    """model.safetensors.index.json, as save_pretrained writes it."""
    return {"metadata": {"total_parameters": total_parameters, **split_result.metadata},
            "weight_map": split_result.tensor_to_filename}
