"""SeatsCall: host-side state of one decoder call, and the selection functions the rewritten graph calls.

The passes insert calls to the `seats_*` functions below at stage boundaries; they run between the
Inductor-compiled pieces of the decoder (eagerly, with sizes known on the host), with the same
`seats_fx.ops` code the eager reference uses.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import torch

from seats_fx.config import SeatsConfig
from seats_fx.models.layout import TEXT, build_token_layout
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.gather import (KeepIndex, causal_mask, gather_square_mask, gather_tokens, keep_for_samples,
                                 mask_fillers)
from seats_fx.ops.relevance import encoder_attention_received, text_query_relevance
from seats_fx.ops.stage_select import stage1_keep_index, stage2_keep_index
from seats_fx.runtime import (EncoderTaps, ModalityTap, PrefillRecord, SeatsStats, prefill_record, set_last_stats,
                              set_prefill_record)
from seats_fx.stage_plan import StagePlan

log = logging.getLogger("seats_fx")
_NAMES = {TEXT: "text", VIDEO: "video", AUDIO: "audio"}


def _received(chunks: list[tuple[torch.Tensor, torch.Tensor]], scale: float | None) -> torch.Tensor:
    """Returns attention received per token over encoder attention chunks of (1, H, n, hd) q and k."""
    parts = []
    for query, key in chunks:
        q, k = query[0].transpose(0, 1), key[0].transpose(0, 1)  # (n, H, hd), as the reference holds them
        bounds = torch.tensor([0, q.shape[0]])
        parts.append(encoder_attention_received(q, k, bounds, scale if scale is not None else q.shape[-1] ** -0.5))
    return torch.cat(parts)


_glue_clock = threading.local()


def _timed(glue):
    """Adds the wall time of a glue function to this thread's selection clock (see glue_seconds)."""
    @functools.wraps(glue)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return glue(*args, **kwargs)
        finally:
            _glue_clock.seconds = getattr(_glue_clock, "seconds", 0.0) + time.perf_counter() - start
    return timed


def reset_glue_clock() -> None:
    _glue_clock.seconds = 0.0


def glue_seconds() -> float:
    """Returns the seconds this thread spent in selection glue since reset_glue_clock(): scores, budgets,
    keep indices and gathers between the compiled pieces (on CUDA, host syncs there wait for the GPU)."""
    return getattr(_glue_clock, "seconds", 0.0)


def _counts(modality: torch.Tensor, valid: torch.Tensor) -> dict[str, int]:
    real = valid > 0
    return {name: int(((modality == code) & real).sum()) for code, name in _NAMES.items()}


class SeatsCall:
    """One decoder call: the stage plan, the token layout, and the positions currently kept."""

    def __init__(self, config: SeatsConfig, adapter, depth: int, tap: ModalityTap | None,
                 encoder_taps: EncoderTaps | None, positions_per_second: int) -> None:
        self.config = config
        self.adapter = adapter
        self.positions_per_window = int(positions_per_second * config.window_seconds)
        self.plan = StagePlan.resolve(config, depth, adapter.drop_layer_fractions, adapter.late_block_fraction)
        self.tap = tap
        self.encoder_taps = encoder_taps
        self.token_weights: torch.Tensor | None = None
        self.active = False
        self.stats = SeatsStats()
        # (first layer index after, length before gather, validity of those tokens)
        self._boundary_lengths: list[tuple[int, int, torch.Tensor]] = []

    # ---- start: layout from the tap, checked against this call's inputs ------------------------------
    def begin(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None,
              cache: tuple[torch.Tensor, ...] = ()) -> None:
        reason = self._why_not(inputs_embeds)
        if any(past.numel() for past in cache):
            if prefill_record() is not None:
                raise RuntimeError("seats: cannot continue a prompt over the pruned KV cache of the last prefill; "
                                   "start from an empty cache (or compile without seats for multi-turn caches)")
            # scores and budgets cover this call's tokens only; cached tokens were selected (or not) before
            reason = reason or "the KV cache already holds tokens (a continued prompt): only a prefill is pruned"

        batch, length = inputs_embeds.shape[:2]
        # the padding mask also covers cached tokens when a cache is continued: this call's are the last
        self.valid = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device) \
            if attention_mask is None else attention_mask[:, -length:].long()
        self.positions = torch.arange(length, device=inputs_embeds.device).expand(batch, length)
        if reason is None:
            ids = self.tap.input_ids
            layout = build_token_layout(ids, positions[0], self.valid, self.tap.token_ids.get("video", ()),
                                        self.tap.token_ids.get("audio", ()), self.tap.token_ids.get("image", ()),
                                        self.positions_per_window)
            self.modality, self.window = layout.modality, layout.window
            if not bool((self.modality != TEXT).any()):
                reason = "no video or audio tokens in this call"
            elif self.config.stage1:
                reason = self._stage1_weights(ids, inputs_embeds)
        if reason is not None:
            self.modality = torch.zeros(batch, length, dtype=torch.long, device=inputs_embeds.device)
            self.window = torch.full_like(self.modality, -1)
            self.stats.skipped = reason
            log.info("seats: decoder call not pruned: %s", reason)
        self.active = reason is None
        self.stats.pruned = self.active
        self.stats.input_counts = _counts(self.modality, self.valid)
        real = self.valid > 0
        self.video_counts = [int(n) for n in ((self.modality == VIDEO) & real).sum(1)]
        self.audio_counts = [int(n) for n in ((self.modality == AUDIO) & real).sum(1)]
        self.num_windows = [int(n) + 1 for n in self.window.amax(1)]
        self.filler: torch.Tensor | None = None  # (B, K): entries that only fill a sample up to width K
        self.inputs_embeds = inputs_embeds
        self.padded_prompt = not bool(real.all())
        self.next_position = positions.masked_fill(~real[None], -1).amax(dim=(0, 2)) + 1

    def _why_not(self, inputs_embeds: torch.Tensor) -> str | None:
        if self.tap is None:
            return "no graph of this forward saw input_ids (inputs_embeds passed directly?)"
        ids = self.tap.input_ids
        if tuple(ids.shape) != tuple(inputs_embeds.shape[:2]):
            return f"input_ids {tuple(ids.shape)} seen earlier do not match inputs_embeds {tuple(inputs_embeds.shape)}"
        if self.tap.embed_weight is None:
            return "no embedding lookup of these input_ids was seen, so they cannot be checked against inputs_embeds"
        placeholder_ids = [t for ids_ in self.tap.token_ids.values() for t in ids_]
        text = ~torch.isin(ids, torch.tensor(placeholder_ids, device=ids.device, dtype=ids.dtype))
        if not torch.equal(inputs_embeds[text], self.tap.embed_weight[ids[text]].to(inputs_embeds.dtype)):
            return "the input_ids seen earlier do not belong to this call's inputs_embeds"
        return None

    def _stage1_weights(self, ids: torch.Tensor, inputs_embeds: torch.Tensor) -> str | None:
        """Sets self.token_weights (B, L) from the encoder taps; returns why it cannot, or None."""
        taps = self.encoder_taps or EncoderTaps()
        weights = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        audio_ids = self.tap.token_ids.get("audio", ())
        is_audio = torch.isin(ids, torch.tensor(audio_ids, device=ids.device))
        if bool(is_audio.any()):
            if taps.audio_chunks is None or taps.mel_lengths is None:
                return "stage 1 needs the audio tower's last attention, which no graph of this forward exposed"
            frames = _received(taps.audio_chunks, taps.audio_scale)
            audio = self.adapter.audio_token_weights(frames, taps.mel_lengths)
            if audio.numel() != int(is_audio.sum()):
                return f"audio tower gave {audio.numel()} token weights for {int(is_audio.sum())} audio tokens"
            weights[is_audio] = audio
        groups = [torch.isin(ids, torch.tensor(self.tap.token_ids.get(kind, ()), device=ids.device))
                  for kind in ("image", "video")]
        groups = [g for g in groups if bool(g.any())]
        runs = [r for r in taps.vision_runs if r.chunks is not None][-len(groups):] if groups else []
        if len(runs) != len(groups):
            return (f"stage 1 needs {len(groups)} vision-tower runs, this forward exposed {len(runs)} (generate() "
                    "encodes images and videos outside the compiled forward: compile with seats_fx.compile(model))")
        for members, run in zip(groups, runs):
            patches = _received(run.chunks, run.scale)
            if patches.numel() != int(members.sum()) * self.adapter.spatial_merge_unit:
                return f"vision tower gave {patches.numel()} patch weights for {int(members.sum())} tokens"
            weights[members] = self.adapter.vision_token_weights(patches, run.window_index)
        self.token_weights = weights
        return None

    # ---- boundaries -------------------------------------------------------------------------------------
    def _keep(self, stage: str, after_layer: int, kept: list[torch.Tensor]) -> KeepIndex:
        """Applies per-sample kept positions (real tokens only) to the per-token state; returns the index."""
        kept = [k[self.valid[b, k] > 0] for b, k in enumerate(kept)]  # padding is never kept
        keep = keep_for_samples(kept)
        self.positions = gather_tokens(self.positions, keep.index, 1)
        self.modality = gather_tokens(self.modality, keep.index, 1)
        self.window = gather_tokens(self.window, keep.index, 1)
        self.valid = gather_tokens(self.valid, keep.index, 1)
        self.filler = keep.filler
        if keep.filler is not None:
            self.valid = self.valid.masked_fill(keep.filler, 0)
            self.modality = self.modality.masked_fill(keep.filler, TEXT)
            self.window = self.window.masked_fill(keep.filler, -1)
        counts = _counts(self.modality, self.valid)
        self.stats.stages.append((stage, after_layer, counts))
        self.stats.stage_positions.append(self._public_positions())
        return keep

    def _public_positions(self) -> torch.Tensor:
        """Returns the kept original positions, -1 where an entry only fills a sample up."""
        return self.positions if self.filler is None else self.positions.masked_fill(self.filler, -1)

    def measured(self, first_layer_after: int, hidden: torch.Tensor) -> None:
        """Records the sequence length the layers before a boundary really processed."""
        self._boundary_lengths.append((first_layer_after, int(hidden.shape[1]), self.valid))

    def stage1(self, hidden: torch.Tensor) -> KeepIndex:
        levels = {VIDEO: self.plan.video.encoder_level, AUDIO: self.plan.audio.encoder_level}
        kept = [stage1_keep_index(hidden[b], self.token_weights[b], self.modality[b], self.window[b], levels,
                                  self.config.stage1_selector, self.config.seed)
                for b in range(hidden.shape[0])]
        return self._keep("stage1", 0, kept)

    def stage2(self, layer_number: int, query: torch.Tensor, key: torch.Tensor, scale) -> KeepIndex:
        # each sample's query is its last real token (the sequence's last entry unless padded on the right)
        last = (self.valid > 0).long().cumsum(1).argmax(1)
        query_row = query.gather(2, last[:, None, None, None].expand(-1, query.shape[1], 1, query.shape[3]))
        scale = float(scale) if scale is not None else query.shape[-1] ** -0.5
        relevance = text_query_relevance(query_row, key, self.valid > 0, scale)
        step = self.plan.drop_layers.index(layer_number)
        kept = []
        for b in range(query.shape[0]):
            video_keep, audio_keep = self.plan.stage2_keep(step, self.video_counts[b], self.audio_counts[b])
            kept.append(stage2_keep_index(relevance[b], self.modality[b], self.window[b], self.num_windows[b],
                                          video_keep, audio_keep, self.config.window_temperature,
                                          self.config.stage2_allocation))
        return self._keep("stage2", layer_number, kept)

    def stage3(self, layer_number: int) -> KeepIndex:
        kept = [torch.nonzero(self.modality[b] == TEXT).flatten() for b in range(self.modality.shape[0])]
        return self._keep("stage3", layer_number - 1, kept)

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """Returns the final hidden states at full length (rows of pruned tokens are zero); records stats."""
        self._boundary_lengths.append((self.plan.depth, int(hidden.shape[1]), self.valid))
        lengths, valid, start = [], [], 0
        for end, length, entering in self._boundary_lengths:
            lengths += [length] * (end - start)
            valid += [entering > 0] * (end - start)
            start = end
        self.stats.layer_tokens = lengths
        self.stats.layer_counts = self._layer_counts()
        self.stats.kept_positions = self._public_positions()
        set_last_stats(self.stats)
        padded = any(not bool(v.all()) for v in valid)
        set_prefill_record(PrefillRecord(self.inputs_embeds.shape[1], lengths, valid if padded else None,
                                         self.next_position) if self.active else None)
        length = self.inputs_embeds.shape[1]
        if hidden.shape[1] == length and self.filler is None:
            return hidden
        # fillers go to a spare row past the end, which is then cut off
        target = self.positions if self.filler is None else self.positions.masked_fill(self.filler, length)
        full = hidden.new_zeros(hidden.shape[0], length + 1, hidden.shape[2])
        return full.scatter(1, target[:, :, None].expand(-1, -1, hidden.shape[2]), hidden)[:, :length]

    def align_cache(self, written: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Returns the keys/values the layers hand to the KV cache, all at one width when the prompt is padded.

        With padding, transformers builds a decode step's mask from its 2-D padding mask once, sized by
        layer 0's cache, for all layers; layers that cached different counts cannot share it. So each
        layer's entries are filled up at the front (zeros, recorded as not valid) to the widest layer's
        count; the decode step then gives each layer its own mask over them.
        """
        record = prefill_record()
        if not self.active or not self.padded_prompt or record is None:
            return written
        width = max(t.shape[-2] for t in written)
        aligned = tuple(torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0)) for t in written)
        valid = record.valid_entries(self.valid.device)
        missing = [width - n for n in record.layer_lengths]
        valid = [torch.nn.functional.pad(v, (m, 0), value=False) for v, m in zip(valid, missing)]
        set_prefill_record(PrefillRecord(record.input_length, [width] * len(valid), valid, record.next_position))
        return aligned

    def _layer_counts(self) -> list[dict[str, int]]:
        counts, current = [], dict(self.stats.input_counts)
        by_layer: dict[int, dict[str, int]] = {}
        for stage, after_layer, stage_counts in self.stats.stages:
            by_layer[after_layer] = stage_counts
        for layer in range(self.plan.depth):
            # a stage recorded "after layer k" (1-based) applies to 0-based layer index k onwards
            if layer in by_layer:
                current = by_layer[layer]
            counts.append(dict(current))
        return counts


# ---- functions the rewritten graph calls (FX call_function targets) -----------------------------------
@_timed
def seats_begin(call: SeatsCall, inputs_embeds, positions, attention_mask, cache=()) -> None:
    call.begin(inputs_embeds, positions, attention_mask, cache)


@_timed
def seats_select_stage1(call: SeatsCall, hidden):
    call.measured(0, hidden)
    if not call.active or not call.config.stage1:
        return None
    return call.stage1(hidden)


@_timed
def seats_select_stage2(call: SeatsCall, hidden, layer_number: int, query, key, scale=None):
    call.measured(layer_number, hidden)
    if not call.active or not bool((call.modality != TEXT).any()):
        return None
    return call.stage2(layer_number, query, key, scale)


@_timed
def seats_select_stage3(call: SeatsCall, hidden, layer_number: int):
    call.measured(layer_number - 1, hidden)
    if not call.active:
        return None
    return call.stage3(layer_number)


@_timed
def seats_gather(value, keep: KeepIndex | None, dim: int):
    return value if keep is None else gather_tokens(value, keep.index, dim)


@_timed
def seats_gather_mask(mask, keep: KeepIndex | None, kept_hidden=None):
    """Returns the mask of the kept tokens. kept_hidden is given where the graph had no mask (causal
    attention) and the layers after this boundary now take an explicit one: samples of a batch may
    keep different counts, so filler entries must be masked."""
    if mask is None:
        if kept_hidden is None:
            return None
        mask = causal_mask(kept_hidden.shape[0], kept_hidden.shape[1], kept_hidden.device)
        return mask if keep is None or keep.filler is None else mask_fillers(mask, keep.filler)
    if keep is None:
        return mask
    kept = gather_square_mask(mask, keep.index)
    return kept if keep.filler is None else mask_fillers(kept, keep.filler)


@_timed
def seats_finish(call: SeatsCall, hidden):
    return call.finish(hidden)


@_timed
def seats_align_cache(call: SeatsCall, *written):
    return call.align_cache(written)
