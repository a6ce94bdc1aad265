"""safetensors files one tensor at a time: read by mapping each tensor's bytes, written by streaming.

Reading (`Header`): `safe_open` lists a file's tensors; porter maps each tensor's own byte
range from the file when it is asked for (`file_bytes.mapped`): it is read as it is used,
its pages go with it, and a tensor written out unchanged is copied file to file by the
kernel. (The library's own `get_tensor` maps the whole file and says nothing of where a
tensor's bytes are, so porter reads the ranges from the header: an 8-byte length, then JSON
giving each tensor's dtype, shape and `data_offsets` after the header.)

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
from functools import cache
from pathlib import Path

import torch

from porter.convert.file_bytes import mapped


def dtype_code(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype ("BF16" for torch.bfloat16), as the library spells it."""
    from safetensors import TensorSpec

    return TensorSpec(dtype=str(dtype).removeprefix("torch."), shape=[0], data_ptr=0, data_len=0).dtype


@cache
def _dtypes() -> dict[str, torch.dtype]:
    """safetensors' dtype names -> torch dtypes, as the library names every torch dtype it knows."""
    found = {}
    for name in dir(torch):
        dtype = getattr(torch, name)
        if isinstance(dtype, torch.dtype):
            try:
                found.setdefault(dtype_code(dtype), dtype)
            except Exception:  # noqa: BLE001 - a dtype the library has no name for (SafetensorError)
                pass
    return found


class Header:
    """A safetensors file's tensors (names, dtypes, shapes, byte ranges), each mapped when asked."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        with safe_open(str(self.path), framework="pt") as f:  # the library checks the file
            self.names = list(f.keys())
        with open(self.path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            self.entries = json.loads(f.read(length))
        self.data = 8 + length

    def meta(self, name: str) -> torch.Tensor:
        """A tensor's shape and dtype, on the meta device (nothing read)."""
        entry = self.entries[name]
        return torch.empty(entry["shape"], dtype=_dtypes()[entry["dtype"]], device="meta")

    def read(self, name: str) -> torch.Tensor:
        """One tensor, mapped from the file (read as it is used)."""
        entry = self.entries[name]
        start, end = entry["data_offsets"]
        dtype = _dtypes()[entry["dtype"]]
        return mapped(self.path, self.data + start, end - start).view(dtype).view(entry["shape"])


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
