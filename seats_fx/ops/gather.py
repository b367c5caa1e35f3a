"""Gather helpers: apply one keep index to every per-token tensor of the decoder."""

from __future__ import annotations

import torch


def gather_tokens(values: torch.Tensor, keep_index: torch.Tensor, dim: int) -> torch.Tensor:
    """Returns values restricted to the kept tokens along `dim`.

    keep_index: (B, K) sorted token positions per sample; `values` has the batch dimension right before
    `dim` (dim - 1), e.g. hidden states (B, L, D) with dim=1, 3-D position ids (3, B, L) with dim=2,
    cos/sin (B, L, hd) with dim=1.
    """
    dim = dim % values.dim()
    if dim == 0 or values.shape[dim - 1] != keep_index.shape[0]:
        raise ValueError(f"expected the batch dimension ({keep_index.shape[0]}) right before dim {dim}, "
                         f"got values of shape {tuple(values.shape)}")
    shape = [1] * values.dim()
    shape[dim - 1], shape[dim] = keep_index.shape
    index = keep_index.view(shape).expand(*values.shape[:dim], keep_index.shape[1], *values.shape[dim + 1:])
    return values.gather(dim, index)


def gather_square_mask(mask: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
    """Returns a (B, h, K, K) attention mask restricted to the kept rows and columns of a (B, h, L, L) one."""
    batch, heads, _, length = mask.shape
    kept = keep_index.shape[1]
    rows = mask.gather(2, keep_index[:, None, :, None].expand(batch, heads, kept, length))
    return rows.gather(3, keep_index[:, None, None, :].expand(batch, heads, kept, kept))
