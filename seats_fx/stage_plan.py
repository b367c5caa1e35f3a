"""StagePlan: a SeatsConfig resolved against one model's depth: where each stage acts and how much it keeps."""

from __future__ import annotations

from dataclasses import dataclass

from seats_fx.config import SeatsConfig
from seats_fx.ops.schedule import ModalitySchedule, count_at_level, scaled_layers, solve_schedule


def stage1_counts(level: float, group_sizes: list[int]) -> int:
    """Returns how many tokens stage 1 keeps over (window, modality) groups of the given sizes."""
    return sum(count_at_level(level, size) for size in group_sizes)


@dataclass(frozen=True)
class StagePlan:
    """Stage boundaries (1-based decoder layers) and keep schedules of one config on one model.

    drop_layers: stage 2 drops after these layers; late_block_layer: from this layer on only text is
    processed (None: no truncation); video / audio: keep levels as fractions of the pre-stage-1 counts.
    """

    depth: int
    drop_layers: tuple[int, ...]
    late_block_layer: int | None
    video: ModalitySchedule
    audio: ModalitySchedule

    @classmethod
    def resolve(cls, config: SeatsConfig, depth: int, drop_fractions: tuple[float, ...],
                late_fraction: float) -> "StagePlan":
        """Returns the plan; explicit layers in the config win over the family's depth-scaled defaults."""
        late = None
        if config.stage3:
            late = config.late_block_layer if config.late_block_layer is not None \
                else max(2, min(depth, round(late_fraction * depth)))
            if not 2 <= late <= depth:
                raise ValueError(f"SeatsConfig.late_block_layer must be in [2, {depth}] for a {depth}-layer "
                                 f"decoder, got {late}")
        drops: tuple[int, ...] = ()
        if config.stage2:
            limit = (late - 1) if late is not None else depth - 1
            drops = config.progressive_drop_layers if config.progressive_drop_layers is not None \
                else tuple(d for d in scaled_layers(drop_fractions, depth) if d <= limit)
            if drops and drops[-1] > limit:
                raise ValueError(f"SeatsConfig.progressive_drop_layers must be in [1, {limit}] for a {depth}-layer "
                                 f"decoder with late_block_layer={late}, got {drops}")
        ratios = config.encoder_ratio
        return cls(
            depth=depth, drop_layers=drops, late_block_layer=late,
            video=solve_schedule(config.video_retention, ratios["video"], drops, late, depth, config.drop_growth),
            audio=solve_schedule(config.audio_retention, ratios["audio"], drops, late, depth, config.drop_growth),
        )

    def layer_token_counts(self, text: int, windows: list[tuple[int, int]], stage1: bool = True) -> list[int]:
        """Returns the sequence length each decoder layer processes for a layout with `text` text tokens and
        (video, audio) tokens per window. Exact: every stage keeps a host-known total (only stage 2's split
        between the modalities depends on the data)."""
        videos, audios = [v for v, _ in windows], [a for _, a in windows]
        video_total, audio_total = sum(videos), sum(audios)
        media = (stage1_counts(self.video.encoder_level, videos) + stage1_counts(self.audio.encoder_level, audios)) \
            if stage1 else video_total + audio_total
        lengths = []
        for layer in range(1, self.depth + 1):
            if self.late_block_layer is not None and layer >= self.late_block_layer:
                media = 0
            lengths.append(text + media)
            if layer in self.drop_layers:
                video_keep, audio_keep = self.stage2_keep(self.drop_layers.index(layer), video_total, audio_total)
                media = min(media, (video_keep if video_total else 0) + (audio_keep if audio_total else 0))
        return lengths

    def stage2_keep(self, step: int, video_count: int, audio_count: int) -> tuple[int, int]:
        """Returns (video_keep, audio_keep) after stage-2 step `step` for the pre-stage-1 counts given.

        Counts come from the schedule's levels times the original counts (host-known), not from the
        data-dependent per-modality split of the previous step, so every step's total is fixed.
        """
        return (count_at_level(self.video.step_levels[step], video_count),
                count_at_level(self.audio.step_levels[step], audio_count))
