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
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from seats_fx.beam_copies import weights_for_copies
from seats_fx.config import SeatsConfig
from seats_fx.decode_step import decode_mask_shared_by_all_layers
from seats_fx.encoder_attention import SegmentChunks
from seats_fx.models.layout import TEXT, layout_on_host
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.gather import (KeepIndex, causal_mask, gather_square_mask, gather_tokens, keep_for_samples,
                                 mask_fillers)
from seats_fx.ops.budget import keep_index_from_mask
from seats_fx.ops.relevance import encoder_attention_received, last_token_relevance
from seats_fx.ops.sizes import SampleSizes, group_slot, host_table, sizes_on_host
from seats_fx.ops.stage_select import stage1_batches, stage1_picks, stage2_select
from seats_fx.runtime import (EncoderTaps, ModalityTap, PrefillRecord, SeatsStats, prefill_record, set_last_stats,
                              set_prefill_record)
from seats_fx.stage_plan import StagePlan

log = logging.getLogger("seats_fx")


def _received(chunks, scale: float | None) -> torch.Tensor:
    """Returns attention received per token over encoder attention chunks of (1, H, n, hd) q and k: one
    segment per chunk, all chunks in one call. Graph taps give a list of chunks, whose shapes are the
    bounds (no read); the fast encoders' record (SegmentChunks) gives the packed q/k and their cu_seqlens,
    host-known once begin's transfer has carried them (_Transfer), read here otherwise."""
    if isinstance(chunks, SegmentChunks):
        query, key = chunks.packed()
        bounds = chunks.bounds()
    else:
        chunks = list(chunks)
        bounds = [0]
        for q, _ in chunks:
            bounds.append(bounds[-1] + q.shape[2])
        query = torch.cat([q for q, _ in chunks], dim=2)[0].transpose(0, 1)  # (n, H, hd), as the reference holds it
        key = torch.cat([k for _, k in chunks], dim=2)[0].transpose(0, 1)
    return encoder_attention_received(query, key, bounds, scale if scale is not None else query.shape[-1] ** -0.5)


_glue_clock = threading.local()


def _timed(glue):
    """Adds the wall time of a glue function to this thread's selection clock (see glue_seconds), and runs
    it under this thread's glue observer if one is set (seats_fx.host_reads counts host reads and ops)."""
    @functools.wraps(glue)
    def timed(*args, **kwargs):
        observe = getattr(_glue_clock, "observe", None)
        start = time.perf_counter()
        try:
            if observe is None:
                return glue(*args, **kwargs)
            with observe(glue.__name__):
                return glue(*args, **kwargs)
        finally:
            _glue_clock.seconds = getattr(_glue_clock, "seconds", 0.0) + time.perf_counter() - start
    return timed


def set_glue_observer(observe):
    """Sets this thread's glue observer: observe(glue function name) -> a context manager each glue call
    runs in (None: none). Returns the previous one."""
    previous = getattr(_glue_clock, "observe", None)
    _glue_clock.observe = observe
    return previous


def reset_glue_clock() -> None:
    _glue_clock.seconds = 0.0


def glue_seconds() -> float:
    """Returns the seconds this thread spent in selection glue since reset_glue_clock(): scores, budgets,
    keep indices and gathers between the compiled pieces (on CUDA, host syncs there wait for the GPU)."""
    return getattr(_glue_clock, "seconds", 0.0)


_PLACEHOLDER_KINDS = ("audio", "image", "video")  # placeholder token kinds, in the order stage-1 weights use
_VISION_KINDS = ("image", "video")  # the kinds the vision tower encodes, one run each


@dataclass(frozen=True)
class _HostPrompt:
    """What begin's one read brought to the host (numpy arrays, (B, L) unless said otherwise)."""

    positions: np.ndarray  # (3, B, L) TMRoPE positions
    valid: np.ndarray  # 1 for real tokens, 0 for padding
    input_ids: np.ndarray | None  # None when the prompt cannot be pruned anyway (no layout is built)
    embeds_differ: np.ndarray | None  # bool: the token's embedding differs from its inputs_embeds row
    mel_lengths: list[int] | None  # mel frames per audio of the audio tower's input, when it was tapped


@dataclass(frozen=True)
class _Transfer:
    """The device data begin needs on the host, flattened into one 1-D long tensor (one read): the
    positions, the padding mask, and with a prompt to prune the input ids, which tokens' embeddings differ
    from inputs_embeds, the audio mel lengths and the fast encoders' segment bounds."""

    values: torch.Tensor
    shape: tuple[int, int]  # (B, L)
    with_mask: bool
    with_prompt: bool
    audios: int  # how many mel lengths follow (0: the audio tower was not tapped)
    # the fast encoders' records whose cu_seqlens follow the mel lengths, in order (their bounds on the host)
    recorded: tuple[SegmentChunks, ...] = ()

    @staticmethod
    def of(call: "SeatsCall", inputs_embeds: torch.Tensor, positions: torch.Tensor,
           attention_mask: torch.Tensor | None, with_prompt: bool) -> "_Transfer":
        batch, length = inputs_embeds.shape[:2]
        if tuple(positions.shape) != (3, batch, length):
            raise ValueError(f"seats: expected (3, {batch}, {length}) TMRoPE position ids for inputs_embeds "
                             f"{tuple(inputs_embeds.shape)}, got {tuple(positions.shape)}")
        # Qwen3-Omni's positions are float (integral values): made integral, or cat would make every part float
        parts = [positions.reshape(-1).long() if positions.is_floating_point() else positions.reshape(-1)]
        if attention_mask is not None:
            # the padding mask also covers cached tokens when a cache is continued: this call's are the last.
            # A float mask would turn the whole transfer into floats: made integral first
            mask = attention_mask[:, -length:].reshape(-1)
            parts.append(mask.long() if mask.is_floating_point() else mask)
        audios, recorded = 0, ()
        if with_prompt:
            tap, ids = call.tap, call.tap.input_ids
            # exact, as torch.equal (NaN differs); only text tokens' rows must match (decided on the host)
            differs = (inputs_embeds != tap.embed_weight[ids].to(inputs_embeds.dtype)).any(-1)
            parts += [ids.reshape(-1), differs.reshape(-1)]
            taps = call.encoder_taps
            mel = taps.mel_lengths if taps is not None and call.plan.stage1 else None
            if mel is not None:
                parts.append(mel.reshape(-1))
                audios = mel.numel()
            recorded = _device_bounded_records(taps) if taps is not None and call.plan.stage1 else ()
            parts += [record.cu_seqlens.to(ids.device) for record in recorded]
        # cat promotes every part (bool, int32) to long: no op of their own
        return _Transfer(torch.cat(parts), (batch, length), attention_mask is not None, with_prompt, audios, recorded)

    def read(self) -> _HostPrompt:
        """Returns the transferred values on the host (the one read), and gives each fast-encoder record its
        segment bounds."""
        values = self.values.cpu().numpy()
        batch, length = self.shape
        tokens = batch * length
        positions, at = values[:3 * tokens].reshape(3, batch, length), 3 * tokens
        valid = np.ones((batch, length), dtype=np.int64)
        if self.with_mask:
            valid, at = values[at:at + tokens].reshape(batch, length), at + tokens
        if not self.with_prompt:
            return _HostPrompt(positions, valid, None, None, None)
        ids, differs = values[at:at + tokens].reshape(batch, length), values[at + tokens:at + 2 * tokens] > 0
        at += 2 * tokens
        mel = values[at:at + self.audios].tolist() if self.audios else None
        at += self.audios
        for record in self.recorded:
            count = record.cu_seqlens.numel()
            record.set_host_bounds(values[at:at + count].tolist())
            at += count
        return _HostPrompt(positions, valid, ids, differs.reshape(batch, length), mel)


def _stage1_records(taps: EncoderTaps) -> list[tuple[Any, float | None]]:
    """Returns (chunks, scale) of the encoder records stage 1 may read: the audio tower's, and the last vision
    runs', one per vision placeholder kind at most (SeatsCall._stage1_weights takes the last runs, one per
    kind present)."""
    vision = [(run.chunks, run.scale) for run in taps.vision_runs if run.chunks is not None][-len(_VISION_KINDS):]
    audio = [(taps.audio_chunks, taps.audio_scale)] if taps.audio_chunks is not None else []
    return audio + vision


def _device_bounded_records(taps: EncoderTaps) -> tuple[SegmentChunks, ...]:
    """Returns the records of _stage1_records whose segment bounds are on the device (the fast encoders'
    SegmentChunks)."""
    return tuple(chunks for chunks, _ in _stage1_records(taps) if isinstance(chunks, SegmentChunks))


def _weight_index(members: np.ndarray) -> np.ndarray:
    """Returns (B, L) each token's entry in the stage-1 weight table: 0 for tokens of no kind, else 1 + the
    weights of the kinds before its own + its rank among its kind's tokens in row-major order (the order
    the encoders give their weights in). members: (kinds, B, L) bool, disjoint, kinds in table order."""
    flat = members.reshape(members.shape[0], -1)
    return (flat.reshape(-1).cumsum().reshape(flat.shape) * flat).sum(0).reshape(members.shape[1:])


class SeatsCall:
    """One decoder call: the stage plan, the token layout, and the positions currently kept."""

    def __init__(self, config: SeatsConfig, adapter, depth: int, tap: ModalityTap | None,
                 encoder_taps: EncoderTaps | None, positions_per_second: int,
                 report: Callable[[str, str], None] | None = None) -> None:
        """report(reason, kind): told when a prompt is left unpruned, or stage 1 runs on a weaker signal,
        for a reason that is not the user's choice (the backend warns once per kind, or raises if strict)."""
        self.config = config
        self.report = report or (lambda reason, kind: log.warning("seats: %s", reason))
        self.adapter = adapter
        self.positions_per_window = int(positions_per_second * config.window_seconds)
        self.plan = StagePlan.resolve(config, depth, adapter.drop_layer_fractions, adapter.late_block_fraction)
        self.tap = tap
        self.encoder_taps = encoder_taps
        self.token_weights: torch.Tensor | None = None
        self._received: dict[int, torch.Tensor] = {}  # begin's stage-1 attention products, by record id
        self.active = False
        self.stats = SeatsStats()
        # (first layer index after, length before gather, validity of those tokens)
        self._boundary_lengths: list[tuple[int, int, torch.Tensor]] = []
        self.layer_cache_width: int | None = None  # set when layers hand over their caches one by one, aligned

    # ---- start: layout from the tap, checked against this call's inputs ------------------------------
    # begin reads the device once (_Transfer): the ids, positions and padding mask, with what the checks need
    # (which embeddings differ from inputs_embeds, the audio mel lengths, the fast encoders' segment bounds).
    # The layout, its sizes and every per-token table are computed on the host and uploaded in one copy, so
    # the layout launches no device work; errors and reasons are decided from the host values.
    def begin(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None,
              cache: tuple[torch.Tensor, ...] = (), why_not: str | None = None) -> None:
        """why_not: a reason the caller already knows this call cannot be pruned (reported like any other)."""
        reason = why_not or self._why_not(inputs_embeds)
        loud = reason is not None  # a tap that does not check out is never the user's choice
        if any(past.numel() for past in cache):
            if prefill_record() is not None:
                raise RuntimeError("seats: cannot continue a prompt over the pruned KV cache of the last prefill; "
                                   "start from an empty cache (or compile without seats for multi-turn caches)")
            # scores and budgets cover this call's tokens only; cached tokens were selected (or not) before
            reason = reason or "the KV cache already holds tokens (a continued prompt): only a prefill is pruned"
        self.filler: torch.Tensor | None = None  # (B, K): entries that only fill a sample up to width K
        self.inputs_embeds = inputs_embeds
        host = _Transfer.of(self, inputs_embeds, positions, attention_mask, reason is None).read()
        # the stage-1 weights' attention products need only the segment bounds just read: launched now, the
        # device computes them while the host works out the layout below (the GPU idled through it before)
        self._received = self._launch_received() if reason is None and self.plan.stage1 else {}
        modality = window = members = None
        if reason is None:
            members = np.stack([np.isin(host.input_ids, self.tap.token_ids.get(kind, ()))
                                for kind in _PLACEHOLDER_KINDS])
            every = [t for ids in self.tap.token_ids.values() for t in ids]
            if (host.embeds_differ & ~np.isin(host.input_ids, every)).any():
                reason, loud = "the input_ids seen earlier do not belong to this call's inputs_embeds", True
            else:
                modality, window = layout_on_host(host.input_ids, host.positions[0], host.valid,
                                                  *(tuple(self.tap.token_ids.get(kind, ()))
                                                    for kind in ("video", "audio", "image")),
                                                  self.positions_per_window)
                if not (modality != TEXT).any():
                    reason = "no video or audio tokens in this call"
        if reason is not None:
            modality, window = np.zeros_like(host.valid), np.full_like(host.valid, -1)
        sizes = sizes_on_host(modality, window, host.valid)
        weight_index = _weight_index(members) if reason is None and self.plan.stage1 else None
        weight_index = self._set_layout(sizes, modality, window, host, weight_index, inputs_embeds.device)
        if weight_index is not None:
            self._stage1_weights(weight_index, {kind: [int(n) for n in per_sample] for kind, per_sample in
                                                zip(_PLACEHOLDER_KINDS, members.sum(2))},
                                 host.mel_lengths)
        self._received = {}  # the records' tensors are not held past begin
        if reason is not None:
            self.stats.skipped = reason
            log.info("seats: decoder call not pruned: %s", reason)
            if loud:
                self.report(f"prompt left unpruned: {reason}", "unpruned: " + reason.split(" (")[0][:60])
        self.active = reason is None
        self.stats.pruned = self.active

    def _why_not(self, inputs_embeds: torch.Tensor) -> str | None:
        """Returns why this call cannot be pruned from what the host knows (None: nothing yet); the check
        of the input_ids' embeddings against inputs_embeds needs device data (_Transfer, read once)."""
        if self.tap is None:
            return "no graph of this forward saw input_ids (inputs_embeds passed directly?)"
        ids = self.tap.input_ids
        if tuple(ids.shape) != tuple(inputs_embeds.shape[:2]):
            return f"input_ids {tuple(ids.shape)} seen earlier do not match inputs_embeds {tuple(inputs_embeds.shape)}"
        if self.tap.embed_weight is None:
            return "no embedding lookup of these input_ids was seen, so they cannot be checked against inputs_embeds"
        if not self.tap.token_ids:
            return "no graph of this forward told the model's placeholder token ids (its config was not found)"
        width, expected = inputs_embeds.shape[-1], self.tap.embed_weight.shape[-1]
        if width != expected:
            return (f"the input_ids seen earlier do not belong to this call's inputs_embeds (their embedding has "
                    f"width {expected}, inputs_embeds {width})")
        return None

    def _stage1_weights(self, weight_index: torch.Tensor, per_sample: dict[str, list[int]],
                        mel_lengths: list[int] | None) -> None:
        """Sets self.token_weights (B, L) from the encoder taps: the attention each media token received in
        the last layer of its encoder. A modality whose encoder attention this forward did not expose (e.g.
        generate() encodes video before the compiled prefill) gets uniform weights (max-min diversity
        without weighting), recorded in last_stats().stage1_signal and reported once.

        weight_index: (B, L) each token's entry in the table of weights (_weight_index); per_sample: placeholder
        tokens of each kind in each sample. The encoders give one weight per token of a kind, in row-major
        order, so one gather places them all."""
        taps = self.encoder_taps or EncoderTaps()
        tokens = {kind: sum(counts) for kind, counts in per_sample.items()}
        values = []
        if tokens["audio"]:
            values.append(self._signal("audio", tokens["audio"], lambda: self._audio_weights(taps, mel_lengths)))
        groups = [kind for kind in _VISION_KINDS if tokens[kind]]
        recorded = [r for r in taps.vision_runs if r.chunks is not None]
        runs = recorded[-len(groups):] if groups else []
        for index, kind in enumerate(groups):
            run = runs[index] if len(runs) == len(groups) else None
            # one tower run per kind covered every sample: generate()'s copies of a prompt share its weights
            copies = per_sample[kind] if len(recorded) == len(groups) else None
            values.append(self._signal("video", tokens[kind], lambda: self._vision_weights(run), copies))
        # entry 0 is the weight of every other token; a kind's weights follow those of the kinds before it
        table = torch.cat([values[0].new_zeros(1)] + [v.float() for v in values])
        self.token_weights = table[weight_index]

    def _signal(self, modality: str, count: int, tapped: Callable[[], "torch.Tensor | str"],
                copies_per_sample: list[int] | None = None) -> torch.Tensor:
        """Returns the stage-1 weights of `count` tokens of a modality from its encoder taps, or uniform
        ones (and reports why) when the taps do not give exactly one weight per token. copies_per_sample:
        the tokens of each sample, where the taps may cover generate()'s copies of each prompt once
        (beam_copies)."""
        weights = tapped()
        if isinstance(weights, torch.Tensor) and weights.numel() != count and copies_per_sample is not None:
            expanded = weights_for_copies(weights, copies_per_sample)
            if expanded is not None:
                weights = expanded
        if isinstance(weights, torch.Tensor) and weights.numel() == count:
            self.stats.stage1_signal.setdefault(modality, "encoder attention")
            return weights
        why = weights if isinstance(weights, str) else f"its encoder gave {weights.numel()} weights for {count} tokens"
        self.stats.stage1_signal[modality] = f"uniform ({why})"
        self.report(f"stage 1 selected {modality} tokens by max-min diversity without attention weights: {why}; "
                    "seats_fx.compile(model, options) (or seats_fx.use_fast_encoders(model, stage1_taps=True) before "
                    "compiling) gives the full method", f"stage-1 signal {modality}")
        return torch.ones(count, dtype=torch.float32, device=self.tap.input_ids.device)

    def _launch_received(self) -> dict[int, torch.Tensor]:
        """Returns the attention received per token of every encoder record stage 1 may read
        (_stage1_records), by id of the record: device work that needs no layout, queued before the layout
        is computed on the host."""
        if self.encoder_taps is None:
            return {}
        return {id(chunks): _received(chunks, scale) for chunks, scale in _stage1_records(self.encoder_taps)}

    def _received_by(self, chunks, scale: float | None) -> torch.Tensor:
        """Returns _received(chunks, scale), launched by begin where it was (computed now otherwise)."""
        received = self._received.get(id(chunks))
        return received if received is not None else _received(chunks, scale)

    def _audio_weights(self, taps: EncoderTaps, mel_lengths: list[int] | None) -> "torch.Tensor | str":
        if taps.audio_chunks is None or mel_lengths is None:
            return "the audio tower's last attention was not seen in this forward"
        frames = self._received_by(taps.audio_chunks, taps.audio_scale)
        return self.adapter.audio_token_weights(frames, mel_lengths)

    def _vision_weights(self, run) -> "torch.Tensor | str":
        if run is None:
            return ("the vision tower's last attention was not seen in this forward (generate() encodes images "
                    "and videos before the compiled prefill)")
        patches = self._received_by(run.chunks, run.scale)
        if patches.numel() % self.adapter.spatial_merge_unit:
            return f"the vision tower gave {patches.numel()} patch weights"
        return self.adapter.vision_token_weights(patches, run.window_index)

    # ---- boundaries -------------------------------------------------------------------------------------
    # After begin every stage keeps a number of tokens the host knows (ops.sizes, the schedule), so
    # stage 1, each stage-2 step, stage 3 and finish run with fixed shapes and read no device data; the
    # per-modality split of a stage-2 step is known on the device only and is read once, in finish.
    def _set_layout(self, sizes: list[SampleSizes], modality: np.ndarray, window: np.ndarray, host: _HostPrompt,
                    weight_index: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
        """Sets the host-known counts of the layout, and uploads in one copy the per-token state each stage
        gathers with one index (position, modality, window, valid and group slot: ops.sizes.group_slot), the
        stage-1 weight index and the position decoding goes on from. Returns the weight index on the device
        (None without one)."""
        self.sizes = sizes
        self.video_counts = [s.video for s in self.sizes]
        self.audio_counts = [s.audio for s in self.sizes]
        self.num_windows = [s.num_windows for s in self.sizes]
        self.stats.input_counts = {"text": sum(s.text for s in self.sizes), "video": sum(self.video_counts),
                                   "audio": sum(self.audio_counts)}
        self.padded_prompt = any(s.padding for s in self.sizes)
        self.media_counts = [s.media for s in self.sizes]  # video + audio tokens now in each sample
        self._has_invalid = self.padded_prompt  # the sequence holds padding or fillers (entries for nothing)
        self._pending_counts: list[tuple[dict[str, int], torch.Tensor]] = []  # stage counts on the device
        self._group_counts: list[torch.Tensor | None] = [None] * len(self.sizes)  # (2, W) tokens per group
        batch, length = modality.shape
        slot = np.stack([group_slot(modality[b], window[b], s.num_windows, host.valid[b])
                         for b, s in enumerate(sizes)])
        positions = np.broadcast_to(np.arange(length), (batch, length))
        state = np.stack([positions, modality, window, host.valid, slot], axis=-1)
        # the position after each sample's last real token (where decoding goes on)
        next_position = np.where(host.valid[None] > 0, host.positions, -1).max(axis=(0, 2)) + 1
        parts = [state.reshape(-1), next_position] + ([] if weight_index is None else [weight_index.reshape(-1)])
        uploaded = host_table(np.concatenate(parts).astype(np.int64), device)
        tokens = batch * length
        self._set_state(uploaded[:5 * tokens].view(batch, length, 5))
        self.next_position = uploaded[5 * tokens:5 * tokens + batch]
        return None if weight_index is None else uploaded[5 * tokens + batch:].view(batch, length)

    def _set_state(self, state: torch.Tensor) -> None:
        self._state = state
        self.positions, self.modality, self.window, self.valid, self.slot = state.unbind(-1)

    def _keep(self, stage: str, after_layer: int, kept: list[torch.Tensor], counts: dict[str, int],
              device_counts: torch.Tensor | None = None) -> KeepIndex:
        """Applies per-sample kept positions (sorted, real tokens only, lengths known on the host) to the
        per-token state; returns the index. device_counts: (2,) video and audio kept, when only the device
        knows them (read in finish)."""
        keep = KeepIndex(kept[0][None]) if len(kept) == 1 else keep_for_samples(kept)
        state = gather_tokens(self._state, keep.index, 1)
        if keep.filler is not None:
            # an entry filling a sample up stands for nothing: invalid text without a window, never kept
            fill = host_table([[0, TEXT, -1, 0, 2 * w + 1] for w in self.num_windows], state.device)
            columns = host_table([False, True, True, True, True], state.device, torch.bool)
            state = torch.where(keep.filler[:, :, None] & columns, fill[:, None, :], state)
        self._set_state(state)
        self.filler = keep.filler
        self._has_invalid = keep.filler is not None
        self.stats.stages.append((stage, after_layer, counts))
        if device_counts is not None:
            self._pending_counts.append((counts, device_counts))
        self.stats.stage_positions.append(self._public_positions())
        return keep

    def _public_positions(self) -> torch.Tensor:
        """Returns the kept original positions, -1 where an entry only fills a sample up."""
        return self.positions if self.filler is None else self.positions.masked_fill(self.filler, -1)

    def measured(self, first_layer_after: int, hidden: torch.Tensor) -> None:
        """Records the sequence length the layers before a boundary really processed."""
        self._boundary_lengths.append((first_layer_after, int(hidden.shape[1]), self.valid, self._has_invalid))

    def stage1(self, hidden: torch.Tensor) -> KeepIndex:
        levels = {VIDEO: self.plan.video.encoder_level, AUDIO: self.plan.audio.encoder_level}
        kept, counts = [], {"text": 0, "video": 0, "audio": 0}
        for b, sizes in enumerate(self.sizes):
            text = self.slot[b] == 2 * sizes.num_windows
            picks = stage1_picks(hidden[b], self.token_weights[b], self.modality[b], self.window[b], sizes, levels,
                                 self.config.stage1_selector, self.config.seed, self.slot[b])
            media = {VIDEO: 0, AUDIO: 0}
            for _, k, groups in stage1_batches(sizes, levels):
                for _, kind in groups:
                    media[kind] += k
            kept.append(keep_index_from_mask(text.index_fill(0, picks, True), sizes.text + media[VIDEO] + media[AUDIO]))
            self.media_counts[b] = media[VIDEO] + media[AUDIO]
            self._group_counts[b] = None
            counts["text"] += sizes.text
            counts["video"] += media[VIDEO]
            counts["audio"] += media[AUDIO]
        return self._keep("stage1", 0, kept, counts)

    def stage2(self, layer_number: int, query: torch.Tensor, key: torch.Tensor, scale) -> KeepIndex:
        if self._has_invalid:
            # padding or fillers: each sample's query is its last real token (right padding moves it)
            last = (self.valid > 0).long().cumsum(1).argmax(1)
            query_row = query.gather(2, last[:, None, None, None].expand(-1, query.shape[1], 1, query.shape[3]))
            key_mask = self.valid > 0
        else:
            query_row, key_mask = query[:, :, -1:], None
        scale = float(scale) if scale is not None else query.shape[-1] ** -0.5
        relevance = last_token_relevance(query_row, key, key_mask, scale)
        step = self.plan.drop_layers.index(layer_number)
        kept, budgets = [], []
        for b, sizes in enumerate(self.sizes):
            video_keep, audio_keep = self.plan.stage2_keep(step, sizes.video, sizes.audio)
            # a step keeps exactly its budgets: they are the next step's group counts
            positions, budget = stage2_select(relevance[b], self.slot[b], sizes.num_windows, video_keep, audio_keep,
                                              self.config.window_temperature, self.config.stage2_allocation,
                                              sizes.text, self.media_counts[b], self._group_counts[b])
            kept.append(positions)
            budgets.append(budget)
            self._group_counts[b] = budget
            self.media_counts[b] = min(video_keep + audio_keep, self.media_counts[b])
        counts = {"text": sum(s.text for s in self.sizes), "video": -1, "audio": -1}  # set in finish
        if all(budget is not None for budget in budgets):
            split = budgets[0].sum(1) if len(budgets) == 1 else torch.stack([b.sum(1) for b in budgets]).sum(0)
            return self._keep("stage2", layer_number, kept, counts, split)
        keep = self._keep("stage2", layer_number, kept, counts)
        real = self.valid > 0
        self._pending_counts.append((counts, torch.stack([((self.modality == kind) & real).sum()
                                                          for kind in (VIDEO, AUDIO)])))
        return keep

    def stage3(self, layer_number: int) -> KeepIndex:
        kept = [keep_index_from_mask(self.slot[b] == 2 * s.num_windows, s.text) for b, s in enumerate(self.sizes)]
        self.media_counts = [0] * len(self.sizes)
        counts = {"text": sum(s.text for s in self.sizes), "video": 0, "audio": 0}
        return self._keep("stage3", layer_number - 1, kept, counts)

    def _read_stage_counts(self) -> None:
        """Fills in the per-modality counts only the device knew (stage-2 splits): one host read, at the end."""
        if self._pending_counts:
            values = torch.stack([c for _, c in self._pending_counts]).tolist()
            for (counts, _), (video, audio) in zip(self._pending_counts, values):
                counts["video"], counts["audio"] = video, audio
            self._pending_counts = []

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """Returns the final hidden states at full length (rows of pruned tokens are zero); records stats."""
        self._boundary_lengths.append((self.plan.depth, int(hidden.shape[1]), self.valid, self._has_invalid))
        lengths, entering, start, padded = [], [], 0, False
        for end, length, valid, invalid in self._boundary_lengths:
            lengths += [length] * (end - start)
            entering.append((valid, end - start))
            padded |= invalid and end > start
            start = end
        if self.active:
            self._read_stage_counts()
        self.stats.layer_tokens = lengths
        self.stats.layer_counts = self._layer_counts()
        self.stats.kept_positions = self._public_positions()
        set_last_stats(self.stats)
        valid = [mask for v, layers in entering for mask in [v > 0] * layers] if padded else None
        set_prefill_record(PrefillRecord(self.inputs_embeds.shape[1], lengths, valid, self.next_position)
                           if self.active else None)
        if self.layer_cache_width is not None and prefill_record() is not None:
            set_prefill_record(_aligned_record(prefill_record(), self.layer_cache_width, self.valid.device))
        return self.full_length(hidden)

    def full_length(self, hidden: torch.Tensor, positions: torch.Tensor | None = None,
                    filler: torch.Tensor | None = None) -> torch.Tensor:
        """Returns hidden (B, K, D) of the kept tokens at the prompt's length, rows of pruned tokens zero.
        positions / filler: what hidden's rows are (default: what is kept now)."""
        if positions is None:
            positions, filler = self.positions, self.filler
        length = self.inputs_embeds.shape[1]
        if hidden.shape[1] == length and filler is None:
            return hidden
        # fillers go to a spare row past the end, which is then cut off
        target = positions if filler is None else positions.masked_fill(filler, length)
        full = hidden.new_zeros(hidden.shape[0], length + 1, hidden.shape[2])
        return full.scatter(1, target[:, :, None].expand(-1, -1, hidden.shape[2]), hidden)[:, :length]

    def align_layer_cache(self, written: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Returns the keys/values one layer hands to the KV cache when the layers run as graphs of their own
        (seats_fx.layerwise): as align_cache does for a whole decoder, but one layer at a time, before the
        later layers' counts are known. Layer 0 caches the most tokens (stages only drop), so every layer
        is filled up at the front to layer 0's width; finish records which entries are fillers."""
        if not self.active or not (self.padded_prompt or decode_mask_shared_by_all_layers()):
            return written
        width = max(t.shape[-2] for t in written)
        if self.layer_cache_width is None:
            self.layer_cache_width = width
        return tuple(t if t.shape[-2] == self.layer_cache_width
                     else torch.nn.functional.pad(t, (0, 0, self.layer_cache_width - t.shape[-2], 0)) for t in written)

    def align_cache(self, written: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Returns the keys/values the layers hand to the KV cache, all at one width when the decode steps
        will get one mask for all layers.

        transformers builds that mask once, sized by layer 0's cache, for all layers: from the 2-D padding
        mask when the prompt is padded, and always in versions that materialize it under Dynamo (transformers
        5.17; decode_step.decode_mask_shared_by_all_layers probes it). Layers that cached different counts
        cannot share it (Dynamo's trace of the step fails before seats sees it). So each layer's entries are
        filled up at the front (zeros, recorded as not valid) to the widest layer's count; the decode step then
        gives each layer its own mask over them. Otherwise the cache keeps its per-layer counts (no fillers).
        """
        record = prefill_record()
        if not self.active or record is None:
            return written
        if not self.padded_prompt and (len(set(record.layer_lengths)) == 1 or not decode_mask_shared_by_all_layers()):
            return written
        width = max(t.shape[-2] for t in written)
        # the widest layers' entries stay as they are: no op for them
        aligned = tuple(t if t.shape[-2] == width else torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0))
                        for t in written)
        set_prefill_record(_aligned_record(record, width, self.valid.device))
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


def _aligned_record(record: PrefillRecord, width: int, device: torch.device) -> PrefillRecord:
    """Returns the record of a cache whose layers were filled up at the front to `width` entries."""
    missing = [width - n for n in record.layer_lengths]
    if record.layer_valid is None:
        # every cached entry is a real token: a layer's valid entries are those after its fillers, one
        # comparison for all layers
        batch = record.next_position.shape[0]
        after_fillers = torch.arange(width, device=device) >= host_table(missing, device)[:, None]
        valid = list(after_fillers[:, None].expand(-1, batch, -1).unbind(0))
    else:
        valid = [v if m == 0 else torch.nn.functional.pad(v, (m, 0), value=False)
                 for v, m in zip(record.valid_entries(device), missing)]
    return PrefillRecord(record.input_length, [width] * len(valid), valid, record.next_position)


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
    if not call.active or not any(call.media_counts):
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
