"""Decode steps over a pruned KV cache: the positions and per-layer masks a one-token call needs.

After a pruned prefill each decoder layer cached a different number of tokens. transformers builds a
decode step's inputs from the cache of layer 0: its length stands for "tokens seen" (the position of
the new token, when no padding mask is passed) and sizes the one attention mask all layers share.
The rewritten decode graph calls `seats_decode_step` once, before the first layer, to put both right.

That shared mask can only be replaced once Dynamo has traced the step, and Dynamo's trace of the layers runs
them on it: where transformers materializes it, the layers must cache one width (SeatsCall.align_cache).
"""

from __future__ import annotations

import functools
import logging

import torch

from seats_fx.runtime import PrefillRecord, prefill_record

log = logging.getLogger("seats_fx")


@functools.cache
def decode_mask_shared_by_all_layers() -> bool:
    """True when transformers, traced by Dynamo, hands a one-token step without a padding mask a materialized
    SDPA mask (sized from layer 0's cache, for every layer), False when it passes None (each layer attends to
    its own cache). Then a pruned cache, whose layers hold different counts, breaks Dynamo's trace of the first
    decode step before seats sees its graph ("The size of tensor a (s95 + 1) must match ... (s53 + 1)").

    Probed, not read from a version: the answer depends on transformers and torch together (measured:
    transformers 5.17 with torch 2.11 materializes it, 5.23 with torch 2.13 and 2.14.1 does not; 5.23 skips
    it only where Dynamo does not fold torch.compiler.is_exporting() to True, which torch 2.11's Dynamo does).
    The probe traces transformers' create_causal_mask once per process with Dynamo (about 1.5 s on a CPU),
    for SDPA (the thinkers' default attention), over a two-layer cache; its compile is left out of Dynamo's
    counters (it is seats' own, not the user's). If it cannot run, the answer is True: one-width caches decode
    under either behaviour (the fillers cost memory and decode compute, not correctness)."""
    from torch._dynamo.utils import counters
    from transformers import PretrainedConfig
    from transformers.cache_utils import DynamicCache
    from transformers.masking_utils import create_causal_mask

    config = PretrainedConfig()
    config._attn_implementation = "sdpa"
    cache = DynamicCache()
    for layer, length in enumerate((3, 2)):  # the shape of a pruned cache: a later layer holds fewer tokens
        cache.update(torch.zeros(1, 1, length, 4), torch.zeros(1, 1, length, 4), layer)

    def one_token_step_mask(token: torch.Tensor, positions: torch.Tensor):
        return create_causal_mask(config=config, inputs_embeds=token, attention_mask=None, past_key_values=cache,
                                  position_ids=positions)

    saved = {group: counter.copy() for group, counter in counters.items()}
    try:
        mask = torch.compile(one_token_step_mask, backend="eager", fullgraph=True)(
            torch.zeros(1, 1, 4), torch.tensor([[3]]))
    except Exception as error:  # whatever stops the probe: fall back to what decodes either way
        log.warning("seats: could not probe how transformers masks a decode step under Dynamo (%s: %s); pruned "
                    "KV caches are written at one width", type(error).__name__, error)
        return True
    finally:
        counters.clear()
        counters.update(saved)
    return mask is not None


def _steps_since_prefill(record: PrefillRecord, lengths: list[int]) -> int:
    """Returns how many tokens were appended to every layer since the prefill; raises if the cache is
    not the one the record describes."""
    steps = {now - then for now, then in zip(lengths, record.layer_lengths)}
    if len(lengths) != len(record.layer_lengths) or len(steps) != 1 or min(steps) < 0:
        raise RuntimeError(f"seats: this KV cache (layer lengths {lengths}) does not continue the last pruned "
                           f"prefill on this thread (layer lengths {record.layer_lengths}); decode each "
                           "generation right after its own prefill, on the thread that ran it")
    return steps.pop()


def _layer_mask(valid: torch.Tensor, steps: int, like: torch.Tensor | None) -> torch.Tensor:
    """Returns a (B, 1, 1, K + steps + 1) mask: cached entries as recorded, generated tokens visible."""
    new = torch.ones(valid.shape[0], steps + 1, dtype=torch.bool, device=valid.device)
    allowed = torch.cat([valid, new], dim=1)[:, None, None, :]
    if like is None or like.dtype == torch.bool:
        return allowed
    return torch.zeros((), dtype=like.dtype, device=like.device).masked_fill(~allowed, torch.finfo(like.dtype).min)


def seats_decode_step(positions: torch.Tensor, positions_follow_cache: bool, mask, *layer_keys):
    """Returns (positions, per-layer masks) for a one-token decoder call.

    positions: (3, B, 1) as transformers computed them; positions_follow_cache: whether it computed
    them from layer 0's cache length (no padding mask given); mask: the mask all layers would share;
    layer_keys: each layer's past keys (B, H, K_l, D).
    """
    record = prefill_record()
    lengths = [int(keys.shape[-2]) for keys in layer_keys]
    if record is None:
        if len(set(lengths)) > 1:
            raise RuntimeError(f"seats: decode step over a KV cache whose layers hold {lengths} tokens, but no "
                               "pruned prefill on this thread recorded them")
        return positions, (mask,) * len(layer_keys)
    steps = _steps_since_prefill(record, lengths)
    if positions_follow_cache:
        # transformers counted the tokens layer 0 cached; the unpruned model counts the prompt's tokens
        positions = positions + (record.input_length - record.layer_lengths[0])
        expected = (record.next_position + steps).to(positions.device)
        if not torch.equal(positions[:, :, -1], expected.expand(positions.shape[0], -1)):
            raise RuntimeError(f"seats: decode positions {positions[:, :, -1].tolist()} do not continue the "
                               f"prompt's positions (expected {expected.tolist()})")
    if mask is None and record.layer_valid is None:
        return positions, (None,) * len(layer_keys)
    return positions, tuple(_layer_mask(v, steps, mask) for v in record.valid_entries(positions.device))
