"""torch.save files (DeepSpeed's checkpoint files, HF's pytorch_model*.bin) one tensor at a time.

Reading: torch's own loader reads a file's structure with `map_location="meta"` (no tensor
data; each storage keeps its byte offset in the file, `_checkpoint_offset`), and a tensor is
mapped from the file when asked (`mmap` of its own bytes): it is read as it is used, and its
pages go with it. `torch.load(mmap=True)` maps the whole file in one piece, so a file's pages
would stay with the process until its last tensor goes.

Writing: `write_skeleton` saves a file's structure with torch's `skip_data` (the storages'
space reserved, nothing written: a sparse file), `tensor_offsets` reads back where each
tensor's bytes go, and `file_bytes.write_at` puts a tensor's bytes there when it is ready. The file is
torch.save's own format; `torch.load` reads it as any other.

Objects of a tree's own classes (an enum in a checkpoint's args) load as stand-ins when the
tree is not importable here (`TOLERANT_PICKLE`).
"""

from __future__ import annotations

import pickle
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from porter.convert.file_bytes import mapped

KeyPath = tuple  # the keys from a file's top object down to one tensor


class _Opaque:
    """Stands for an object of the tree's own classes (an enum in its args) when the tree is not importable."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})

    def __repr__(self):
        return f"{type(self).__module__}.{type(self).__name__}{self.args}"


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Opaque,), {"__module__": module})


TOLERANT_PICKLE = types.SimpleNamespace(__name__="porter_tolerant_pickle", Unpickler=_TolerantUnpickler,
                                        load=pickle.load, loads=pickle.loads)


def load_whole(path: Path) -> Any:
    """torch.load of a small file (a checkpoint's client state), tensors and all."""
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=TOLERANT_PICKLE)


def tensors_in(obj: Any, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, torch.Tensor]]:
    """(key path, tensor) of every tensor in nested dicts, lists and tuples, in order."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors_in(value, (*prefix, key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from tensors_in(value, (*prefix, index))


def at(obj: Any, path: KeyPath) -> Any:
    for key in path:
        obj = obj[key]
    return obj


class TorchFile:
    """A torch.save file: its structure (tensors on the meta device), each tensor read when asked.

    `trusted`: a checkpoint the user's own run wrote (its args are objects of the tree's
    classes); otherwise (HF's .bin files) only tensors and plain containers are unpickled."""

    def __init__(self, path: Path, trusted: bool = True) -> None:
        self.path = Path(path)
        if trusted:
            self.structure = torch.load(self.path, map_location="meta", weights_only=False,
                                        pickle_module=TOLERANT_PICKLE)
        else:
            self.structure = torch.load(self.path, map_location="meta", weights_only=True)
        self._whole = None

    def read(self, meta: torch.Tensor) -> torch.Tensor:
        """The tensor of this file that `meta` (a tensor of `structure`) stands for, mapped from the file."""
        storage = meta.untyped_storage()
        offset = getattr(storage, "_checkpoint_offset", None)
        if offset is None:  # a file torch wrote before its zip format: no offsets, read once whole
            return self._read_whole(meta)
        data = mapped(self.path, offset, storage.nbytes())
        return data.view(meta.dtype).as_strided(meta.shape, meta.stride(), meta.storage_offset())

    def _read_whole(self, meta: torch.Tensor) -> torch.Tensor:
        if self._whole is None:
            self._whole = dict(tensors_in(load_whole(self.path)))
        path = next(p for p, t in tensors_in(self.structure) if t is meta)
        return self._whole[path]


def _placeholders(obj: Any) -> Any:
    """obj with every tensor replaced by an empty one of its shape (memory reserved, never touched)."""
    if torch.is_tensor(obj):
        return torch.empty(obj.shape, dtype=obj.dtype)
    if isinstance(obj, dict):
        items = [(k, _placeholders(v)) for k, v in obj.items()]
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [_placeholders(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_placeholders(v) for v in obj)
    return obj


def write_skeleton(path: Path, obj: Any) -> None:
    """torch.save obj, whose tensors may be on the meta device, without their bytes: a file of
    the full size with the tensors' space left empty, for `write_at` to fill."""
    with torch.serialization.skip_data():
        torch.save(_placeholders(obj), path)


def tensor_offsets(path: Path) -> dict[KeyPath, int]:
    """key path -> where that tensor's bytes start in a file torch.save wrote."""
    structure = torch.load(path, map_location="meta", weights_only=False, pickle_module=TOLERANT_PICKLE)
    out = {}
    for key, meta in tensors_in(structure):
        out[key] = meta.untyped_storage()._checkpoint_offset + meta.storage_offset() * meta.element_size()
    return out
