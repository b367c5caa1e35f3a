"""Gather helpers: apply one keep index to every per-token tensor of the decoder."""

from __future__ import annotations

from dataclasses import dataclass

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
    if batch == 1 and keep_index.shape[0] == 1:
        # rows and columns in one indexing op (one launch on a GPU, not two)
        return mask[0][:, keep_index[0, :, None], keep_index[0, None, :]][None]
    rows = mask.gather(2, keep_index[:, None, :, None].expand(batch, heads, kept, length))
    return rows.gather(3, keep_index[:, None, None, :].expand(batch, heads, kept, kept))


@dataclass(frozen=True)
class KeepIndex:
    """What one stage keeps: positions (B, K) into the sequence entering it, sorted per sample.

    Samples that keep fewer than K tokens are filled at the front: where `filler` (B, K) is True the entry
    repeats the sample's first kept position and stands for nothing (masked as a key, dropped from the
    outputs). filler is None when every sample keeps K tokens.
    """

    index: torch.Tensor
    filler: torch.Tensor | None = None


def keep_for_samples(kept: list[torch.Tensor]) -> KeepIndex:
    """Returns one KeepIndex from per-sample sorted positions of different lengths."""
    width = max(k.numel() for k in kept)
    if all(k.numel() == width for k in kept):
        return KeepIndex(torch.stack(kept))
    rows, fillers = [], []
    for k in kept:
        missing = width - k.numel()
        first = k[:1] if k.numel() else torch.zeros(1, dtype=torch.long, device=k.device)
        rows.append(torch.cat([first.expand(missing), k]))
        fillers.append(torch.arange(width, device=k.device) < missing)
    return KeepIndex(torch.stack(rows), torch.stack(fillers))


def mask_fillers(mask: torch.Tensor, filler: torch.Tensor) -> torch.Tensor:
    """Returns a (B, h, K, K) mask (bool: True attends; float: additive) in which no query attends a filler
    key and each filler query attends only itself (a row with no key at all would give NaN)."""
    eye = torch.eye(filler.shape[1], dtype=torch.bool, device=filler.device)
    rows, cols = filler[:, None, :, None], filler[:, None, None, :]
    if mask.dtype == torch.bool:
        return torch.where(rows, eye, mask & ~cols)
    low = torch.tensor(torch.finfo(mask.dtype).min, dtype=mask.dtype, device=mask.device)
    zero = torch.zeros((), dtype=mask.dtype, device=mask.device)
    return torch.where(rows, torch.where(eye, zero, low), torch.where(cols, low, mask))


def causal_mask(batch: int, length: int, device) -> torch.Tensor:
    """Returns a (B, 1, L, L) bool causal mask (True attends)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril().expand(batch, 1, length, length)
