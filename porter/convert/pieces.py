"""A tensor as pieces: a tuple of tensors whose rows, one piece after the other, are its rows.

What the ranks hold of a row-split tensor (the embedding, the head) are the pieces of the
full one; the fused gate+up halves a rank holds are two pieces of the full projection.
Written back to back (`file_bytes.write_at` takes a tuple) they are the tensor, so it is
never put together in memory; each piece that is a mapped file range is copied file to file.
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


def first_rows(value, rows: int):
    """The first `rows` rows of a tensor or of pieces (pieces cut where they end)."""
    if not isinstance(value, tuple):
        return value[:rows]
    out, left = [], rows
    for piece in value:
        if left <= 0:
            break
        out.append(piece[:left])
        left -= piece.shape[0]
    return tuple(out)
