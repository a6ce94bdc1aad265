"""A tensor as pieces: a tuple of tensors whose rows, one piece after the other, are its rows.

A layout change that only puts rows in another order gives pieces instead of a new tensor:
the fused QKV projection is HF's q, k and v rows group by group, the fused gate+up projection
HF's gate rows then its up rows; what the ranks hold of a row-split tensor (the embedding, the
head) are the pieces of the full one. Splitting pieces by rows gives pieces again (views,
nothing copied), and written back to back (`file_bytes.write_at` takes a tuple) they are the
tensor, so it is never put together in memory: each piece that is a mapped file range is
copied file to file. A copy of the model in memory joins them (`joined`).
"""

from __future__ import annotations

import torch

Pieces = tuple  # of tensors, rows after rows


def nbytes(value) -> int:
    """The bytes of a tensor, or of pieces."""
    if isinstance(value, tuple):
        return sum(nbytes(p) for p in value)
    return value.numel() * value.element_size()


def as_meta(value) -> torch.Tensor:
    """A tensor, or the meta tensor its pieces make (shape and dtype, nothing copied)."""
    if isinstance(value, tuple):
        return torch.cat([p.to("meta") for p in value], dim=0)
    return value


def joined(value) -> torch.Tensor:
    """A tensor, or its pieces put together in memory (for a copy of the model in memory)."""
    if isinstance(value, tuple):
        return value[0] if len(value) == 1 else torch.cat(value, dim=0)
    return value


def first_rows(value, count: int):
    """The first `count` rows of a tensor, or of pieces (as pieces)."""
    return value[:count] if not isinstance(value, tuple) else rows_between(value, 0, count)


def rows(value) -> int:
    """The rows of a tensor or of pieces."""
    if isinstance(value, tuple):
        return sum(p.shape[0] for p in value)
    return value.shape[0]


def rows_between(value, start: int, stop: int) -> tuple:
    """Rows start..stop of a tensor or of pieces, as pieces (views)."""
    out, at = [], 0
    for piece in value if isinstance(value, tuple) else (value,):
        count = piece.shape[0]
        if at + count > start and at < stop:
            out.append(piece[max(start - at, 0): min(stop - at, count)])
        at += count
    return tuple(out)
