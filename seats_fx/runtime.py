"""Per-call runtime state of the seats backend: the modality tap and the stats of the last call.

Dynamo splits a thinker forward into many graphs; the graph holding the decoder never sees `input_ids`.
Graphs that compare `input_ids` with the model's modality token ids record them here when they run;
the decoder graph of the same forward takes them (and checks they belong to its `inputs_embeds`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch


@dataclass
class ModalityTap:
    """What earlier graphs of the current forward saw: input_ids (B, L), the token ids of each modality,
    and (when the embedding lookup was seen) the embedding weight, to verify the match."""

    input_ids: torch.Tensor
    token_ids: dict[str, tuple[int, ...]]
    embed_weight: torch.Tensor | None = None
    positions_per_second: int | None = None  # the model config's TMRoPE rate, when the recording graph knew it


@dataclass
class SeatsStats:
    """What the seats backend did in its last decoder call.

    pruned: whether selection ran (False: the reason is in `skipped`); stages: (stage, after_layer,
    {modality: count}) in order; layer_tokens: sequence length each decoder layer processed;
    layer_counts: tokens of each modality each layer processed; input_counts: counts before any stage.
    """

    pruned: bool = False
    skipped: str | None = None
    input_counts: dict[str, int] = field(default_factory=dict)
    stages: list[tuple[str, int, dict[str, int]]] = field(default_factory=list)
    layer_tokens: list[int] = field(default_factory=list)
    layer_counts: list[dict[str, int]] = field(default_factory=list)
    kept_positions: torch.Tensor | None = None
    stage_positions: list[torch.Tensor] = field(default_factory=list)
    # wall time of the selection glue between the compiled pieces of this call (seats_fx.call.glue_seconds)
    selection_seconds: float = 0.0
    # what stage 1 weighted each modality's tokens by: "encoder attention" (the method), or "uniform (why)"
    stage1_signal: dict[str, str] = field(default_factory=dict)

    def mean_fraction(self, modality: str) -> float:
        """Returns the layer-averaged fraction of `modality` tokens processed (1.0 when nothing was pruned)."""
        total = self.input_counts.get(modality, 0)
        if not total or not self.layer_counts:
            return 1.0
        return sum(c[modality] for c in self.layer_counts) / len(self.layer_counts) / total


@dataclass
class PrefillRecord:
    """What a pruned prefill left in each decoder layer's KV cache, for the decode steps that extend it.

    input_length: tokens of the prompt; layer_lengths[l]: tokens layer l cached (padded width for
    batch > 1); layer_valid[l]: (B, layer_lengths[l]) bool, False for padding entries, or None when
    every cached entry is a real token; next_position: (B,) the TMRoPE position of the first generated
    token, as the unpruned model gives it.
    """

    input_length: int
    layer_lengths: list[int]
    layer_valid: list[torch.Tensor] | None
    next_position: torch.Tensor

    def valid_entries(self, device) -> list[torch.Tensor]:
        """Returns layer_valid, spelled out (all True) when every cached entry is a real token."""
        if self.layer_valid is not None:
            return [v.to(device) for v in self.layer_valid]
        batch = self.next_position.shape[0]
        return [torch.ones(batch, n, dtype=torch.bool, device=device) for n in self.layer_lengths]


@dataclass
class VisionRun:
    """One vision-tower call: its window permutation and the last block's attention chunks (q, k)."""

    window_index: torch.Tensor
    chunks: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    scale: float | None = None


@dataclass
class EncoderTaps:
    """What the encoder graphs of the current forward saw, for the stage-1 weights. Chunks are a list of
    per-segment (q, k) from graph taps (bounds known from their shapes), or the fast encoders' record
    (encoder_attention.SegmentChunks: packed q/k, bounds on the device until begin's transfer carries them)."""

    mel_lengths: torch.Tensor | None = None
    audio_chunks: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    audio_scale: float | None = None
    vision_runs: list[VisionRun] = field(default_factory=list)


_local = threading.local()


def _encoder_taps() -> EncoderTaps:
    taps = getattr(_local, "encoder", None)
    if taps is None:
        taps = _local.encoder = EncoderTaps()
    return taps


def record_audio_lengths(feature_attention_mask: torch.Tensor) -> None:
    """Stores the mel-frame count of each audio (the audio tower's input lengths)."""
    _encoder_taps().mel_lengths = feature_attention_mask.sum(-1)


def record_window_index(window_index: torch.Tensor) -> None:
    """Starts a vision run at its window permutation (seen twice per run: for states and rotary)."""
    runs = _encoder_taps().vision_runs
    if not runs or runs[-1].window_index is not window_index:
        runs.append(VisionRun(window_index))


def record_attention_chunks(kind: str, chunks: list[tuple[torch.Tensor, torch.Tensor]], scale) -> None:
    """Stores the (q, k) chunks an encoder attention call saw; the last call of a tower is its last layer."""
    taps = _encoder_taps()
    scale = None if scale is None else float(scale)
    if kind == "audio":
        taps.audio_chunks, taps.audio_scale = chunks, scale
    elif taps.vision_runs:
        taps.vision_runs[-1].chunks, taps.vision_runs[-1].scale = chunks, scale


def take_encoder_taps() -> EncoderTaps:
    """Returns and clears what the encoder graphs of the current forward recorded."""
    taps = _encoder_taps()
    _local.encoder = None
    return taps


def record_modality_tap(input_ids: torch.Tensor, token_ids: dict[str, tuple[int, ...]],
                        positions_per_second: int | None = None) -> None:
    """Stores the input_ids a placeholder-mask graph just saw (keeps an embedding weight seen before)."""
    previous: ModalityTap | None = getattr(_local, "tap", None)
    weight = previous.embed_weight if previous is not None and previous.input_ids is input_ids else None
    _local.tap = ModalityTap(input_ids, token_ids, weight, positions_per_second)


def record_embedding(input_ids: torch.Tensor, weight: torch.Tensor,
                     token_ids: dict[str, tuple[int, ...]] | None = None, positions_per_second: int | None = None
                     ) -> None:
    """Stores the input_ids and embedding weight an embedding-lookup graph just saw, with the model's
    placeholder token ids and TMRoPE rate when the graph's model told them (its config): then no
    placeholder-mask graph needs to be seen (seats_fx.compile runs get_placeholder_mask outside Dynamo).
    The lookup starts a forward, so the stats of the previous call are cleared: a decoder that then runs
    outside seats (e.g. Dynamo fell back to eager) leaves last_stats() at None instead of a stale record.
    One-token lookups (generate()'s decode steps) keep them: after generate(), last_stats() describes the
    prefill."""
    previous: ModalityTap | None = getattr(_local, "tap", None)
    if token_ids is None:
        token_ids = previous.token_ids if previous is not None else {}
    if positions_per_second is None and previous is not None:
        positions_per_second = previous.positions_per_second
    _local.tap = ModalityTap(input_ids, token_ids, weight, positions_per_second)
    if input_ids.shape[-1] > 1:  # a decode step's one-token lookup keeps the prefill's stats
        _local.stats = None
        _local.positions = None  # positions recorded for an earlier forward never serve this one


def record_positions(positions: torch.Tensor) -> None:
    """Stores the (3, B, L) TMRoPE position ids a graph of the text model's rotary embedding just read (the
    decoder layers' own graphs do not see them)."""
    _local.positions = positions


def positions_pending() -> bool:
    """True when position ids were recorded and not taken yet: a new forward has begun."""
    return getattr(_local, "positions", None) is not None


def take_positions() -> torch.Tensor | None:
    """Returns and clears the position ids recorded in this forward."""
    positions = getattr(_local, "positions", None)
    _local.positions = None
    return positions


def take_modality_tap() -> ModalityTap | None:
    """Returns and clears the tap of the current forward (each decoder call consumes it once)."""
    tap = getattr(_local, "tap", None)
    _local.tap = None
    return tap


def take_unconsumed_media_tap() -> ModalityTap | None:
    """Returns (and clears) this forward's tap when it saw a prompt with media tokens that no seats decoder
    took: the decoder of that forward ran without selection. None otherwise."""
    tap = getattr(_local, "tap", None)
    if tap is None or tap.input_ids.shape[-1] < 2 or not tap.token_ids:
        return None
    media = [t for modality in ("image", "video", "audio") for t in tap.token_ids.get(modality, ())]
    if not bool(torch.isin(tap.input_ids, torch.tensor(media, device=tap.input_ids.device)).any()):
        return None
    _local.tap = None
    return tap


def set_last_stats(stats: SeatsStats | None) -> None:
    """Replaces the stats of the last call (None clears them)."""
    _local.stats = stats


def last_stats() -> SeatsStats | None:
    """Returns what the seats backend did in the last prompt (decoder call over more than one token) on this
    thread, None before any; decode steps of generate() leave it as the prefill set it."""
    return getattr(_local, "stats", None)


def set_prefill_record(record: PrefillRecord | None) -> None:
    """Stores what the last prefill on this thread left in the KV cache (None: an unpruned cache)."""
    _local.prefill = record


def prefill_record() -> PrefillRecord | None:
    """Returns the record of the last prefill on this thread, or None."""
    return getattr(_local, "prefill", None)
