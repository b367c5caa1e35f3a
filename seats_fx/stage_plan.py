"""StagePlan: a SeatsConfig resolved against one model's depth: where each stage acts and how much it keeps."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from seats_fx.config import SeatsConfig
from seats_fx.ops.schedule import ModalitySchedule, count_at_level, scaled_layers, solve_schedule


# a target within this of the reachable maximum counts as reached (the schedule is solved in floats)
_REACH_TOLERANCE = 1e-9


def reachable_retention(depth: int, late_block_layer: int | None) -> float:
    """Returns the most of a modality the decoder can process, averaged over its layers, while stage 3 is on:
    every token in the layers before the late block, none from it on (1.0 without a late block)."""
    return (late_block_layer - 1) / depth if late_block_layer is not None else 1.0


def _check_reachable(config: SeatsConfig, modality: str, target: float, schedule: ModalitySchedule, depth: int,
                     late_block_layer: int | None) -> None:
    """Raises ValueError naming the reachable maximum when the schedule cannot keep `target` on average
    (otherwise the solver would silently give the most it can, and 0.9 and 1.0 would be the same plan)."""
    if schedule.mean_level + _REACH_TOLERANCE >= target:
        return
    most = reachable_retention(depth, late_block_layer)
    name = "retention" if config.retention is not None else f"{modality}_retention"
    fixes = [f"stage3=False or a late_block_layer after {late_block_layer}"]
    if target <= most:  # the late block leaves room: stage 1 keeps too little (retention x encoder_ratio_scale)
        fixes.insert(0, f"encoder_ratio_scale >= {1 / most:.3f}")
    fixes.append("retention=1.0 to keep everything")
    raise ValueError(f"SeatsConfig.{name}={target} cannot be reached on a {depth}-layer decoder: with the late block "
                     f"at layer {late_block_layer} (layers {late_block_layer}-{depth} process no video or audio "
                     f"tokens) the {modality} tokens processed average at most {most:.4f} over the layers, and "
                     f"these stages reach {schedule.mean_level:.4f}. For more, use " + ", or ".join(fixes))


def stage1_counts(level: float, group_sizes: list[int]) -> int:
    """Returns how many tokens stage 1 keeps over (window, modality) groups of the given sizes."""
    return sum(count_at_level(level, size) for size in group_sizes)


@dataclass(frozen=True)
class StagePlan:
    """Stage boundaries (1-based decoder layers) and keep schedules of one config on one model.

    stage1: whether stage 1 selects before the LLM; drop_layers: stage 2 drops after these layers;
    late_block_layer: from this layer on only text is processed (None: no truncation); video / audio:
    keep levels as fractions of the pre-stage-1 counts. A keep-everything config (both retentions 1.0)
    resolves to no stage at all.
    """

    depth: int
    drop_layers: tuple[int, ...]
    late_block_layer: int | None
    video: ModalitySchedule
    audio: ModalitySchedule
    stage1: bool = True

    @property
    def selects(self) -> bool:
        """True when some stage runs (False: the decoder runs unchanged)."""
        return self.stage1 or bool(self.drop_layers) or self.late_block_layer is not None

    @classmethod
    def resolve(cls, config: SeatsConfig, depth: int, drop_fractions: tuple[float, ...],
                late_fraction: float) -> "StagePlan":
        """Returns the plan; explicit layers in the config win over the family's depth-scaled defaults.
        Raises ValueError for layers outside the decoder and for a retention the stages cannot reach.
        Every prefill resolves its plan: the same inputs give the same (frozen) plan, computed once
        (the schedule's bisection is milliseconds of host time, while the GPU waits)."""
        return _resolve_once(cls, config, depth, tuple(drop_fractions), late_fraction)

    @classmethod
    def _resolve(cls, config: SeatsConfig, depth: int, drop_fractions: tuple[float, ...],
                 late_fraction: float) -> "StagePlan":
        if config.keeps_everything:
            everything = ModalitySchedule(1.0, (), (1.0,) * depth)
            return cls(depth, (), None, everything, everything, stage1=False)
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
        schedules = {}
        for modality, target in (("video", config.video_retention), ("audio", config.audio_retention)):
            schedule = solve_schedule(target, ratios[modality], drops, late, depth, config.drop_growth)
            _check_reachable(config, modality, target, schedule, depth, late)
            schedules[modality] = schedule
        return cls(depth, drops, late, schedules["video"], schedules["audio"], stage1=config.stage1)

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


@functools.lru_cache(maxsize=64)
def _resolve_once(cls, config: SeatsConfig, depth: int, drop_fractions: tuple[float, ...],
                  late_fraction: float) -> StagePlan:
    return cls._resolve(config, depth, drop_fractions, late_fraction)
