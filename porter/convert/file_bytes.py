"""A tensor's bytes from a file and into one, with as few copies as the kernel allows.

- `mapped(path, offset, size)`: bytes of a file as a tensor, mapped (read as they are used,
  their pages gone with the tensor); porter remembers which file range such a tensor is.
- `write_at(fd, offset, tensor)`: a tensor's bytes (row-major) at offset of an open file:
    * a contiguous tensor that is (part of) a mapped file range is copied file to file by
      the kernel (`copy_file_range`, as `cp` does), not through memory;
    * a matrix whose rows are contiguous but apart (a column split: what a tensor-parallel
      rank holds of a row-parallel weight) is written row by row from where it is
      (`pwritev`), not first copied together;
    * pieces (a tuple of tensors) are written back to back: a concatenation never made;
    * anything else is written from memory, made contiguous first only when it is not.
"""

from __future__ import annotations

import mmap
import os
import weakref

import torch

_SOURCES: dict[int, tuple[str, int]] = {}  # address of a mapped tensor's first byte -> (file, offset)
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def mapped(path, offset: int, size: int) -> torch.Tensor:
    """size bytes of the file at offset, as a uint8 tensor mapped from the file (copy on write)."""
    if size == 0:
        return torch.empty(0, dtype=torch.uint8)
    page = offset - offset % mmap.ALLOCATIONGRANULARITY
    with open(path, "rb") as f:
        region = mmap.mmap(f.fileno(), offset - page + size, offset=page, access=mmap.ACCESS_COPY)
    data = torch.frombuffer(region, dtype=torch.uint8, count=size, offset=offset - page)
    address = data.data_ptr()
    _SOURCES[address] = (str(path), offset)
    weakref.finalize(region, _SOURCES.pop, address, None)  # before the pages are unmapped
    return data


def _source(tensor: torch.Tensor) -> tuple[str, int] | None:
    """(file, offset) of a contiguous tensor's bytes when they are a mapped file range."""
    if not tensor.is_contiguous() or tensor.device.type != "cpu":
        return None
    base = tensor.untyped_storage().data_ptr()
    found = _SOURCES.get(base)
    if found is None:
        return None
    path, offset = found
    return path, offset + tensor.data_ptr() - base


def _all(write, size: int) -> int:
    done = 0
    while done < size:
        step = write(done)
        if step <= 0:
            raise OSError(f"wrote {done} of {size} bytes")
        done += step
    return done


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _rows(tensor: torch.Tensor) -> list[memoryview] | None:
    """The rows of a matrix whose rows are contiguous but not adjacent, each where it is."""
    if tensor.dim() != 2 or tensor.stride(1) != 1 or tensor.stride(0) <= tensor.shape[1] or not tensor.numel():
        return None
    size = tensor.element_size()
    storage = torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage())
    whole = memoryview(storage.numpy())
    start, step, width = tensor.storage_offset() * size, tensor.stride(0) * size, tensor.shape[1] * size
    return [whole[start + i * step: start + i * step + width] for i in range(tensor.shape[0])]


def write_at(fd: int, offset: int, tensor) -> int:
    """Write a tensor's bytes (or pieces', back to back) at offset of the open file fd; returns the bytes."""
    if isinstance(tensor, (tuple, list)):
        done = 0
        for piece in tensor:
            done += write_at(fd, offset + done, piece)
        return done
    tensor = tensor.detach()
    size = tensor.numel() * tensor.element_size()
    source = _source(tensor)
    if source is not None:
        path, start = source
        src = os.open(path, os.O_RDONLY)
        try:
            return _all(lambda done: os.copy_file_range(src, fd, size - done, start + done, offset + done), size)
        except OSError:  # another filesystem that will not: through memory
            pass
        finally:
            os.close(src)
    rows = _rows(tensor)
    if rows is not None:
        done = 0
        for first in range(0, len(rows), IOV_MAX):
            batch = rows[first: first + IOV_MAX]
            length = sum(len(r) for r in batch)
            written = os.pwritev(fd, batch, offset + done)
            if written != length:
                raise OSError(f"wrote {written} of {length} bytes")
            done += written
        return done
    data = _bytes(tensor)
    return _all(lambda done: os.pwrite(fd, data[done:], offset + done), len(data))
