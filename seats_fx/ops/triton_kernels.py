"""Triton kernels for the selection's hot ops on CUDA; torch ops (in the op modules) everywhere else.

Imported only from the CUDA kernels of the seats custom ops (and from tests), so the package works
without triton. Each kernel computes exactly what its torch implementation computes:

- `greedy_max_min` (stage 1): one program per (window, modality) group runs the whole greedy max-min over
  that group's (n, n) distance tile. The tile is computed by the torch ops of `weighted_cosine_distance`
  (a batched GEMM, already on the DISTANCE_GRID), so both paths compare the same numbers and pick the
  same tokens; on chip the program keeps the per-candidate vectors (nearest-neighbour distance, distance
  to the picks, picked flags), and reads one tile row per step (from L2: a 512-token group is 1 MiB).
  This replaces k - 1 steps of ~6 launches each by one launch per batch of groups.
- `query_relevance` (stage 2): the last text token's attention row, q . K over the whole sequence for every
  head (GQA: query head h reads key head h // (H / Hkv)), per-head softmax, mean over heads, without an
  L x L matrix. Kernel 1 reads K once, writes the scaled logits (B, H, L) and each block's softmax max and
  sum; kernel 2 combines the block statistics per head and averages the probabilities over heads.
  Reductions run in a fixed order (no atomics), so a call is deterministic; the values match torch's to
  float rounding.
- `window_budgets` (stage 2): one program per sample computes the window means' softmax weights, the
  exact-total allocation (`allocate_exact`'s closed form: the `total` best (window, slot) priorities, here
  found by bisection over the float64 order instead of a sort of W x total slots) and the video/audio
  split: one launch instead of ~60.
- `top_per_slot` (stage 2): the sorted positions of the top limits[s] scorers of each slot. Kernel 1 (a
  program per 64 tokens) counts, for each token, the tokens of its slot that torch's stable descending sort
  puts first (a larger score, or an equal one at a lower position), 64 columns per step over all L (L^2
  pairs, so up to MAX_RANKED_TOKENS), and writes a keep flag; scores compare by the order of their float32
  bits, so -0.0 ties 0.0 and NaN is above +inf as in torch.sort. Kernel 2 (one program) turns the flags into
  the sorted positions with a running cumsum, padded with L as torch's last sort pads them: two launches
  instead of ~12 (two sorts, searchsorted, the final sort, ...).

TRITON_INTERPRET=1 runs them on CPU tensors (the tests do); `SEATS_FX_TRITON=0` turns them off on CUDA.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from pathlib import Path

import torch

MAX_GROUP = 4096  # tokens of one stage-1 group a program holds (per-candidate vectors of this width)
MAX_HEAD_DIM = 256
MAX_WINDOWS = 8192  # windows of one sample the budget program holds
# tokens one top_per_slot call ranks: its first kernel compares all L^2 pairs, ~6 instructions a pair (sm_90
# SASS), so ~0.1 ms at 20k tokens and ~0.25 ms here on an H100 by that count (not measured); longer sequences
# take the torch ops (O(L log L) sorts, ~12 launches)
MAX_RANKED_TOKENS = 32768
RANKED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # scores whose float32 value is exact
RANK_BLOCK = 64  # tokens ranked per program, and compared with them per step
COMPACT_BLOCK = 1024  # keep flags the one compaction program reads per step
ALWAYS = 2 ** 62  # keep limit of the text slot (ops.budget.ALWAYS)


def available() -> bool:
    """True when triton imports and the kernels are not switched off (SEATS_FX_TRITON=0)."""
    if os.environ.get("SEATS_FX_TRITON", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def usable(tensor: torch.Tensor) -> bool:
    """True when the kernels serve this tensor: on CUDA (or any device under TRITON_INTERPRET=1)."""
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return (tensor.is_cuda or interpret) and available()


def _load(interpret: bool):
    """Returns the kernels module, loaded once per mode under its own name (triton reads TRITON_INTERPRET when
    a kernel is defined, so interpreted and compiled kernels cannot share one module object)."""
    name = f"seats_fx.ops._triton_impl_{'interpreted' if interpret else 'compiled'}"
    module = sys.modules.get(name)
    if module is None:
        if interpret:
            _index_scalars_under_numpy2()
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_triton_impl.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def _index_scalars_under_numpy2() -> None:
    """triton's interpreter (3.5, 3.6) turns a scalar into an int with int(array) on a one-element 1-D array,
    which numpy >= 2.3 refuses; loops with runtime bounds then fail. Interpreter only: compiled kernels
    never take this path."""
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "seats_fx_scalar_index", False):
        return

    def patched(tensor, *args, **kwargs):  # triton 3.6 passes a patch scope too
        patch(tensor, *args, **kwargs)
        tensor.__index__ = lambda self: int(self.handle.data.reshape(-1)[0])

    patched.seats_fx_scalar_index = True
    interpreter._patch_lang_tensor = patched


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _float64_bits(value: float) -> int:
    """A float64 as the int64 with its bits: triton passes Python floats as float32."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _get():
    return _load(os.environ.get("TRITON_INTERPRET", "0") == "1")


def greedy_max_min(distance: torch.Tensor, k: int) -> torch.Tensor:
    """Triton version of ops.diversity.greedy_max_min: (G, n, n) float32 distances -> (G, k) picks."""
    kernels = _get()
    groups, n, _ = distance.shape
    distance = distance.float().contiguous()
    picks = torch.empty(groups, k, dtype=torch.long, device=distance.device)
    if groups:
        block = _next_power_of_2(n)
        kernels.greedy_kernel[(groups,)](distance, picks, n, k, distance.stride(0), distance.stride(1), BLOCK=block)
    return picks


def query_relevance(query_row: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None,
                    scaling: float) -> torch.Tensor:
    """Triton version of ops.relevance.text_query_relevance for one query row: (B, L) float32."""
    kernels = _get()
    batch, heads, _, dim = query_row.shape
    kv_heads, length = keys.shape[1], keys.shape[2]
    if keys.stride(-1) != 1:
        keys = keys.contiguous()
    if query_row.stride(-1) != 1:
        query_row = query_row.contiguous()
    block_l = 64 if dim > 128 else 128
    blocks = -(-length // block_l)
    logits = torch.empty(batch, heads, length, dtype=torch.float32, device=keys.device)
    block_max = torch.empty(batch, heads, blocks, dtype=torch.float32, device=keys.device)
    block_sum = torch.empty_like(block_max)
    out = torch.empty(batch, length, dtype=torch.float32, device=keys.device)
    mask = key_mask if key_mask is not None else out  # any pointer; unused without a mask
    grid = (batch, blocks)
    kernels.relevance_logits_kernel[grid](query_row, keys, mask, logits, block_max, block_sum, length, float(scaling),
                            query_row.stride(0), query_row.stride(1), keys.stride(0), keys.stride(1),
                            keys.stride(2), mask.stride(0), HEADS=heads, GROUP=heads // kv_heads, DIM=dim,
                            BLOCK_D=_next_power_of_2(dim), BLOCK_L=block_l, HAS_MASK=key_mask is not None)
    kernels.relevance_normalize_kernel[grid](logits, block_max, block_sum, out, length, blocks, HEADS=heads, BLOCK_L=block_l,
                               BLOCK_B=_next_power_of_2(blocks))
    return out


def window_budgets(sums: torch.Tensor, counts: torch.Tensor, video_keep: int, audio_keep: int, total: int,
                   temperature: float) -> torch.Tensor:
    """Triton version of ops.budget.window_budgets: (2, W) sums and counts -> (2W + 2,) keep limits."""
    kernels = _get()
    windows = sums.shape[1]
    out = torch.empty(2 * windows + 2, dtype=torch.long, device=sums.device)
    block = max(2, _next_power_of_2(max(windows, 1)))
    kernels.budgets_kernel[(1,)](sums, counts, out, windows, sums.stride(0), sums.stride(1), counts.stride(0),
                             counts.stride(1), int(video_keep), int(audio_keep), int(total), _float64_bits(temperature),
                             BLOCK_W=block)
    return out


def top_per_slot(scores: torch.Tensor, slot: torch.Tensor, limits: torch.Tensor, count: int) -> torch.Tensor:
    """Triton version of ops.budget.top_per_slot: (L,) scores and slots, (S,) limits -> sorted kept positions
    (the first `count`, padded with L as torch's sort pads them)."""
    kernels = _get()
    length = scores.numel()
    size = len(range(length)[:count])  # what torch's [:count] leaves of L entries, whatever count is
    out = torch.empty(size, dtype=torch.long, device=scores.device)
    if size == 0:
        return out
    keep = torch.empty(length, dtype=torch.int8, device=scores.device)
    kernels.slot_keep_kernel[(-(-length // RANK_BLOCK),)](scores, slot, limits, keep, length, scores.stride(0),
                                                          slot.stride(0), limits.stride(0), BLOCK=RANK_BLOCK)
    kernels.kept_positions_kernel[(1,)](keep, out, length, size, BLOCK=COMPACT_BLOCK)
    return out
