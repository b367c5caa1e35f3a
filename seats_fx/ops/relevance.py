"""Stage-2 scores: attention of text query rows to every key, without a full attention matrix."""

from __future__ import annotations

import torch


def text_query_relevance(query_rows: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None,
                         scaling: float) -> torch.Tensor:
    """Returns (B, L) relevance: per-head softmax of q·k over all keys, averaged over heads and query rows.

    query_rows: (B, H, Q, hd) queries of the Q text rows (rotary applied); keys: (B, Hkv, L, hd) keys of the
    whole current sequence (rotary applied), GQA groups repeated here; key_mask: (B, L) bool, True where a
    key is a real token (padding is False and gets zero relevance). Cost is O(B*H*Q*L*hd), not O(L^2).
    """
    if query_rows.dim() != 4 or keys.dim() != 4:
        raise ValueError(f"expected query_rows (B, H, Q, hd) and keys (B, Hkv, L, hd), got "
                         f"{tuple(query_rows.shape)} and {tuple(keys.shape)}")
    heads, kv_heads = query_rows.shape[1], keys.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads {heads} must be a multiple of key heads {kv_heads}")
    if kv_heads != heads:
        keys = keys.repeat_interleave(heads // kv_heads, dim=1)
    logits = torch.matmul(query_rows.float(), keys.float().transpose(-1, -2)) * scaling
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).mean(dim=(1, 2))


def last_token_relevance(query_row: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None,
                         scaling: float) -> torch.Tensor:
    """Returns (B, L) relevance of one query row per sample (B, H, 1, hd) to keys (B, Hkv, L, hd): what
    text_query_relevance returns for Q = 1, as one op at the dispatcher (two Triton kernels on CUDA: logits
    and per-block softmax statistics in one pass over the keys, then normalisation and the head mean)."""
    return query_relevance(query_row, keys, key_mask, float(scaling))


@torch.library.custom_op("seats_fx::query_relevance", mutates_args=())
def query_relevance(query_row: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None,
                    scaling: float) -> torch.Tensor:
    """See last_token_relevance; torch ops (text_query_relevance) off CUDA."""
    return text_query_relevance(query_row, keys, key_mask, scaling)


@query_relevance.register_fake
def _(query_row, keys, key_mask, scaling):
    return keys.new_empty(keys.shape[0], keys.shape[2], dtype=torch.float32)


@query_relevance.register_kernel("cuda")
def _(query_row, keys, key_mask, scaling):
    from seats_fx.ops import triton_kernels

    if triton_kernels.usable(keys) and query_row.shape[2] == 1 and keys.shape[-1] <= triton_kernels.MAX_HEAD_DIM:
        return triton_kernels.query_relevance(query_row, keys, key_mask, scaling)
    return text_query_relevance(query_row, keys, key_mask, scaling)


def encoder_attention_received(queries: torch.Tensor, keys: torch.Tensor,
                               segment_bounds: torch.Tensor | list[int], scaling: float) -> torch.Tensor:
    """Returns (n,) attention each token receives in a bidirectional encoder layer with packed segments.

    queries, keys: (n, H, hd); segment_bounds: (S+1,) cumulative bounds (cu_seqlens) of the independent
    attention segments, a list (host-known: no read) or a tensor (read once). For each segment: softmax
    over its keys per head and query, then mean over heads and over the segment's queries. Used for the
    stage-1 weights a_j. Consecutive segments of one length run as one batch (a tower's windows and
    frames mostly share a length), so the op count follows the number of distinct lengths, not segments.
    """
    received = torch.empty(queries.shape[0], dtype=torch.float32, device=queries.device)
    bounds = list(segment_bounds) if isinstance(segment_bounds, (list, tuple)) else segment_bounds.tolist()
    heads, dim = queries.shape[1], queries.shape[2]
    for start, length, count in _equal_length_runs(bounds):
        # at most ~2^26 attention probabilities (256 MiB) at a time
        per_batch = max(1, 2 ** 26 // (heads * length * length))
        for first in range(0, count, per_batch):
            batch = min(per_batch, count - first)
            lo, hi = start + first * length, start + (first + batch) * length
            q = queries[lo:hi].float().reshape(batch, length, heads, dim).transpose(1, 2)
            k = keys[lo:hi].float().reshape(batch, length, heads, dim).transpose(1, 2)
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scaling, dim=-1)
            torch.mean(probs, dim=(1, 2), out=received[lo:hi].view(batch, length))  # no copy of its own
    return received


def _equal_length_runs(bounds: list[int]) -> list[tuple[int, int, int]]:
    """Returns (start, length, count) of each run of consecutive non-empty segments of equal length."""
    runs: list[list[int]] = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        if runs and runs[-1][1] == end - start and runs[-1][0] + runs[-1][1] * runs[-1][2] == start:
            runs[-1][2] += 1
        else:
            runs.append([start, end - start, 1])
    return [tuple(run) for run in runs]
