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


def encoder_attention_received(queries: torch.Tensor, keys: torch.Tensor, segment_bounds: torch.Tensor,
                               scaling: float) -> torch.Tensor:
    """Returns (n,) attention each token receives in a bidirectional encoder layer with packed segments.

    queries, keys: (n, H, hd); segment_bounds: (S+1,) cumulative bounds (cu_seqlens) of the independent
    attention segments. For each segment: softmax over its keys per head and query, then mean over heads
    and over the segment's queries. Used for the stage-1 weights a_j.
    """
    received = torch.empty(queries.shape[0], dtype=torch.float32, device=queries.device)
    bounds = segment_bounds.tolist()  # encoder-side helper: runs eagerly before the LLM, never in a graph
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        q = queries[start:end].float().transpose(0, 1)
        k = keys[start:end].float().transpose(0, 1)
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scaling, dim=-1)
        received[start:end] = probs.mean(dim=(0, 1))
    return received
