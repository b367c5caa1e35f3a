"""SeatsCall: host-side state of one decoder call, and the selection functions the rewritten graph calls.

The passes insert calls to the `seats_*` functions below at stage boundaries; they run between the
Inductor-compiled pieces of the decoder (eagerly, with sizes known on the host), with the same
`seats_fx.ops` code the eager reference uses.
"""

from __future__ import annotations

import logging

import torch

from seats_fx.config import SeatsConfig
from seats_fx.models.layout import TEXT, build_token_layout
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.gather import gather_square_mask, gather_tokens
from seats_fx.ops.relevance import encoder_attention_received, text_query_relevance
from seats_fx.ops.stage_select import stage1_keep_index, stage2_keep_index
from seats_fx.runtime import EncoderTaps, ModalityTap, SeatsStats, set_last_stats
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


def _counts(modality: torch.Tensor, valid: torch.Tensor) -> dict[str, int]:
    real = valid > 0
    return {name: int(((modality == code) & real).sum()) for code, name in _NAMES.items()}


class SeatsCall:
    """One decoder call: the stage plan, the token layout, and the positions currently kept."""

    def __init__(self, config: SeatsConfig, adapter, depth: int, tap: ModalityTap | None,
                 encoder_taps: EncoderTaps | None) -> None:
        self.config = config
        self.adapter = adapter
        self.plan = StagePlan.resolve(config, depth, adapter.drop_layer_fractions, adapter.late_block_fraction)
        self.tap = tap
        self.encoder_taps = encoder_taps
        self.token_weights: torch.Tensor | None = None
        self.active = False
        self.stats = SeatsStats()
        self._boundary_lengths: list[tuple[int, int]] = []  # (first layer index after, length before gather)

    # ---- start: layout from the tap, checked against this call's inputs ------------------------------
    def begin(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        reason = self._why_not(inputs_embeds)
        batch, length = inputs_embeds.shape[:2]
        self.valid = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device) \
            if attention_mask is None else attention_mask.long()
        self.positions = torch.arange(length, device=inputs_embeds.device).expand(batch, length)
        if reason is None:
            ids = self.tap.input_ids
            layout = build_token_layout(ids, positions[0], attention_mask, self.tap.token_ids.get("video", ()),
                                        self.tap.token_ids.get("audio", ()), self.tap.token_ids.get("image", ()),
                                        int(self.adapter.position_id_per_seconds * self.config.window_seconds))
            self.modality, self.window = layout.modality, layout.window
            if batch != 1:
                reason = f"batch {batch} > 1 is not pruned yet"
            elif not bool((self.modality != TEXT).any()):
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
        self.video_count = self.stats.input_counts["video"]
        self.audio_count = self.stats.input_counts["audio"]
        self.num_windows = int(self.window.max()) + 1 if self.active else 0
        self.inputs_embeds = inputs_embeds

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
            return f"stage 1 needs {len(groups)} vision-tower runs, this forward exposed {len(runs)}"
        for members, run in zip(groups, runs):
            patches = _received(run.chunks, run.scale)
            if patches.numel() != int(members.sum()) * self.adapter.spatial_merge_unit:
                return f"vision tower gave {patches.numel()} patch weights for {int(members.sum())} tokens"
            weights[members] = self.adapter.vision_token_weights(patches, run.window_index)
        self.token_weights = weights
        return None

    # ---- boundaries -------------------------------------------------------------------------------------
    def _keep(self, stage: str, after_layer: int, keep: torch.Tensor) -> torch.Tensor:
        self.positions = gather_tokens(self.positions, keep, 1)
        self.modality = gather_tokens(self.modality, keep, 1)
        self.window = gather_tokens(self.window, keep, 1)
        self.valid = gather_tokens(self.valid, keep, 1)
        counts = _counts(self.modality, self.valid)
        self.stats.stages.append((stage, after_layer, counts))
        self.stats.stage_positions.append(self.positions)
        return keep

    def measured(self, first_layer_after: int, hidden: torch.Tensor) -> None:
        """Records the sequence length the layers before a boundary really processed."""
        self._boundary_lengths.append((first_layer_after, int(hidden.shape[1])))

    def stage1(self, hidden: torch.Tensor) -> torch.Tensor:
        levels = {VIDEO: self.plan.video.encoder_level, AUDIO: self.plan.audio.encoder_level}
        keep = stage1_keep_index(hidden[0], self.token_weights[0], self.modality[0], self.window[0], levels)
        return self._keep("stage1", 0, keep[None])

    def stage2(self, layer_number: int, query: torch.Tensor, key: torch.Tensor, scale) -> torch.Tensor:
        query_row = query[:, :, -1:]
        scale = float(scale) if scale is not None else query.shape[-1] ** -0.5
        relevance = text_query_relevance(query_row, key, self.valid > 0, scale)
        step = self.plan.drop_layers.index(layer_number)
        video_keep, audio_keep = self.plan.stage2_keep(step, self.video_count, self.audio_count)
        keep = stage2_keep_index(relevance[0], self.modality[0], self.window[0], self.num_windows, video_keep,
                                 audio_keep, self.config.window_temperature)
        return self._keep("stage2", layer_number, keep[None])

    def stage3(self, layer_number: int) -> torch.Tensor:
        keep = torch.nonzero(self.modality[0] == TEXT).flatten()[None]
        return self._keep("stage3", layer_number - 1, keep)

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """Returns the final hidden states at full length (rows of pruned tokens are zero); records stats."""
        self._boundary_lengths.append((self.plan.depth, int(hidden.shape[1])))
        lengths, start = [], 0
        for end, length in self._boundary_lengths:
            lengths += [length] * (end - start)
            start = end
        self.stats.layer_tokens = lengths
        self.stats.layer_counts = self._layer_counts()
        self.stats.kept_positions = self.positions
        set_last_stats(self.stats)
        if hidden.shape[1] == self.inputs_embeds.shape[1]:
            return hidden
        full = hidden.new_zeros(hidden.shape[0], self.inputs_embeds.shape[1], hidden.shape[2])
        return full.scatter(1, self.positions[:, :, None].expand(-1, -1, hidden.shape[2]), hidden)

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
def seats_begin(call: SeatsCall, inputs_embeds, positions, attention_mask) -> None:
    call.begin(inputs_embeds, positions, attention_mask)


def seats_select_stage1(call: SeatsCall, hidden):
    call.measured(0, hidden)
    if not call.active or not call.config.stage1:
        return None
    return call.stage1(hidden)


def seats_select_stage2(call: SeatsCall, hidden, layer_number: int, query, key, scale=None):
    call.measured(layer_number, hidden)
    if not call.active or not bool((call.modality != TEXT).any()):
        return None
    return call.stage2(layer_number, query, key, scale)


def seats_select_stage3(call: SeatsCall, hidden, layer_number: int):
    call.measured(layer_number - 1, hidden)
    if not call.active:
        return None
    return call.stage3(layer_number)


def seats_gather(value, keep, dim: int):
    return value if keep is None else gather_tokens(value, keep, dim)


def seats_gather_mask(mask, keep):
    return mask if keep is None or mask is None else gather_square_mask(mask, keep)


def seats_finish(call: SeatsCall, hidden):
    return call.finish(hidden)
