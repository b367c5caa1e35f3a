"""Qwen2.5-Omni's TMRoPE chunk split without a host loop over the tokens.

transformers' `get_chunked_index` (called by `get_rope_index` for every audio-in-video prompt) walks the
video and the audio positions one token at a time in Python, reading each element of a tensor: about 10,000
reads for a 60 s clip. On an H200 that loop took 190 ms of a 320 ms pruned prefill (seats_fx.compile,
7B-shaped thinker), the GPU idle all along, and 108 ms with plain eager plus fast encoders. `chunk_bounds`
computes the same split with a few numpy operations on the host; `use_fast_rope_index` gives a model's
modules that split, and seats_fx.compile does so. Nothing of the model changes but the time: the bounds are
equal to the loop's (property-tested against it), and inputs outside what the closed form covers (positions
not sorted, non-integer values, a chunk size below 1) go to transformers' own loop.

It also runs `get_rope_index` itself outside Dynamo. Its tensors are host tensors (positions built with
torch.arange on the CPU, one slice per chunk, then concatenated and copied to the device once), so a compiled
forward made them a CPU Inductor graph: on the H200's 16-thread host that graph took 13 ms of the 262 ms
pruned prefill, the GPU idle, where the same few host operations take about 2 ms eagerly here (60 s clip).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seats_fx.instance_methods import override_methods

_ATTRIBUTE = "get_chunked_index"
_ROPE_INDEX = "get_rope_index"


def _integer(value) -> int | None:
    """An int from a Python int or an integer 0-d tensor (get_rope_index passes a tensor); None otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype.is_complex:
            return None
        return int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def chunk_bounds(token_indices: torch.Tensor, tokens_per_chunk, remove_index) -> list[tuple[int, int]] | None:
    """The (start, end) slices transformers' get_chunked_index returns, or None where its closed form does not
    apply (the caller then runs transformers' loop).

    The loop keeps a chunk counter c (from 1) and, at each token i in order, closes a slice when
    value_i - remove_index >= c * tokens_per_chunk, then moves c on by one. With b_i the slices closed after
    token i and f_i = max(0, floor((value_i - remove_index) / tokens_per_chunk)), that is
    b_i = min(f_i, b_(i-1) + 1) for sorted values, so b_i = min(i + 1, min over j <= i of (f_j - j) + i): a
    running minimum. A slice closes at each token where b rises."""
    chunk = _integer(tokens_per_chunk)
    remove = _integer(remove_index)
    if chunk is None or remove is None or chunk < 1:
        return None
    if not isinstance(token_indices, torch.Tensor) or token_indices.dim() != 1 \
            or token_indices.dtype.is_floating_point or token_indices.dtype.is_complex \
            or token_indices.dtype == torch.bool:
        return None
    values = token_indices.detach().to("cpu", torch.int64).numpy()
    count = len(values)
    if count > 1 and bool(np.any(np.diff(values) < 0)):
        return None
    place = np.arange(count, dtype=np.int64)
    reached = np.maximum(np.floor_divide(values - remove, chunk), 0)
    closed = np.minimum(place + 1, np.minimum.accumulate(reached - place) + place) if count else place
    closes_at = np.flatnonzero(np.diff(closed, prepend=0) > 0).tolist()
    starts = [0] + closes_at
    ends = closes_at + [count]
    return list(zip(starts, ends))


@torch.compiler.disable
def _fast_get_chunked_index(self, token_indices, tokens_per_chunk, remove_index):
    bounds = chunk_bounds(token_indices, tokens_per_chunk, remove_index)
    if bounds is None:
        return getattr(type(self), _ATTRIBUTE)(self, token_indices, tokens_per_chunk, remove_index)
    return bounds


@torch.compiler.disable
def _eager_get_rope_index(self, *args, **kwargs):
    return getattr(type(self), _ROPE_INDEX)(self, *args, **kwargs)


def use_fast_rope_index(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Gives every module of `model` that splits TMRoPE positions into chunks (transformers'
    `get_chunked_index`: Qwen2.5-Omni's thinker, its base model, its talker) the host-side split above, and
    runs their `get_rope_index` eagerly under torch.compile (host work: nothing for Inductor to fuse), in place,
    and returns `model`; enabled=False gives them transformers' loop and tracing back. Positions are unchanged."""
    def overrides_for(module: nn.Module) -> dict:
        if not callable(getattr(type(module), _ATTRIBUTE, None)):
            return {}
        overrides = {_ATTRIBUTE: _fast_get_chunked_index}
        if callable(getattr(type(module), _ROPE_INDEX, None)):
            overrides[_ROPE_INDEX] = _eager_get_rope_index
        return overrides

    if not override_methods(model, overrides_for, enabled):
        raise ValueError(f"expected a model with TMRoPE chunking (a Qwen-Omni thinker or full model: a module with "
                         f"{_ATTRIBUTE}), got {type(model).__name__}")
    return model
