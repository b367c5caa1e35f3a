"""Logits of the rows a pruned prefill kept: lm_head skips the all-zero rows of pruned tokens.

Qwen-Omni thinkers compute logits for every position of the prompt (their forward ignores
logits_to_keep), so after pruning most of the lm_head's work multiplies zero rows. With no bias, a zero
row's logits are exactly zero, so computing only the non-zero rows returns the same values (up to the
last-bit rounding a GEMM over another row count may give).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# lm_head weights already checked finite (0 * inf would be NaN, not 0): data_ptr -> version checked.
# Bounded: a weight updated in place gets a new version and replaces its entry.
_finite_weights: dict[int, int] = {}
_MAX_CHECKED_WEIGHTS = 16


def _known_finite(weight: torch.Tensor) -> bool | None:
    """True when the weight was checked finite and is unchanged since; None when it must be checked now; False
    when it cannot be: a tensor subclass (a torchao-quantized weight) keeps its values in inner tensors, which
    plain ops cannot check. An inference tensor (a model made or moved under torch.inference_mode) keeps no
    version counter, so an in-place change would not show: it is checked on every call."""
    if type(weight) not in (torch.Tensor, torch.nn.Parameter):
        return False
    if weight.is_inference():
        return None
    return True if _finite_weights.get(weight.data_ptr()) == weight._version else None


def _remember_finite(weight: torch.Tensor) -> None:
    if weight.is_inference():
        return
    if len(_finite_weights) >= _MAX_CHECKED_WEIGHTS:
        _finite_weights.clear()
    _finite_weights[weight.data_ptr()] = weight._version


def seats_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Returns F.linear(hidden, weight), computing only rows of `hidden` that are not all zero.

    One host read (how many rows are kept, which sizes the GEMM, and whether the weight is finite where
    that is not known yet) per call with more than one row per sample; none with one row per sample
    (generate()'s prefill asks for the last position only), where there is nothing to skip. It comes after the whole decoder is queued, so on CUDA it stalls the launch
    of the lm_head only, not the decoder."""
    if hidden.dim() < 2 or hidden.shape[-2] == 1:
        return F.linear(hidden, weight)
    nonzero = (hidden != 0).any(dim=-1).flatten()
    finite = _known_finite(weight)
    if finite is None:  # how many rows are kept and whether the weight is finite: one read for both
        both = torch.stack([nonzero.sum(), torch.isfinite(weight).all().long()])
        kept, finite = (int(value) for value in both.tolist())
        if finite:
            _remember_finite(weight)
    else:
        kept = int(nonzero.sum())
    if kept == nonzero.numel() or not finite:
        return F.linear(hidden, weight)
    # the kept rows in row order (a stable sort puts them first), gathered and scattered back by index:
    # the same rows and order as boolean-mask indexing, without its two further reads
    rows = torch.sort(nonzero, descending=True, stable=True).indices[:kept]
    flat = hidden.reshape(-1, hidden.shape[-1])
    logits = F.linear(flat.index_select(0, rows), weight)
    # the linear's dtype, not hidden's: under torch.autocast it computes in the autocast dtype
    out = logits.new_zeros(flat.shape[0], weight.shape[0])
    out.index_copy_(0, rows, logits)
    return out.view(*hidden.shape[:-1], weight.shape[0])
