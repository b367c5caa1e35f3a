"""The retention schedule: how many tokens of a modality each decoder layer sees."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ModalitySchedule:
    """Keep levels of one modality, as fractions of its token count before stage 1.

    `encoder_level`: fraction kept by stage 1 (layers 1 .. first drop).
    `step_levels[i]`: fraction kept after the i-th stage-2 drop.
    `layer_levels[l]`: fraction seen by decoder layer l (0-based), 0 after the late-block cut.
    """

    encoder_level: float
    step_levels: tuple[float, ...]
    layer_levels: tuple[float, ...]

    @property
    def mean_level(self) -> float:
        """Returns the layer-averaged keep fraction (what `*_retention` targets)."""
        return sum(self.layer_levels) / len(self.layer_levels)


def _layer_levels(encoder_level: float, step_levels: list[float], drop_layers: tuple[int, ...],
                  cut_layer: int | None, depth: int) -> list[float]:
    levels = []
    for layer in range(1, depth + 1):
        if cut_layer is not None and layer >= cut_layer:
            levels.append(0.0)
            continue
        passed = sum(1 for d in drop_layers if layer > d)
        levels.append(step_levels[passed - 1] if passed else encoder_level)
    return levels


def solve_schedule(target: float, encoder_level: float, drop_layers: tuple[int, ...], cut_layer: int | None,
                   depth: int, drop_growth: float = math.e, iterations: int = 60) -> ModalitySchedule:
    """Returns the schedule whose layer-average keep fraction is as close to `target` as the stages allow.

    The K stage-2 steps drop amounts proportional to drop_growth**0 .. drop_growth**(K-1) of one total D,
    found by bisection (the layer average falls monotonically as D grows). D is 0 when even no stage-2
    drop stays under the target, and `encoder_level` when dropping everything still stays above it.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target keep fraction must be in (0, 1], got {target}")
    if not 0.0 < encoder_level <= 1.0:
        raise ValueError(f"encoder_level must be in (0, 1], got {encoder_level}")
    if drop_layers and drop_layers[-1] >= depth:
        raise ValueError(f"progressive drop layers {drop_layers} must be < the decoder depth {depth}")
    if cut_layer is not None and not 2 <= cut_layer <= depth:
        raise ValueError(f"late block layer must be in [2, {depth}], got {cut_layer}")
    weights = [drop_growth ** i for i in range(len(drop_layers))]
    shares = [w / sum(weights) for w in weights] if weights else []

    def steps_for(total_drop: float) -> list[float]:
        levels, level = [], encoder_level
        for share in shares:
            level = max(0.0, level - total_drop * share)
            levels.append(level)
        return levels

    def mean_for(total_drop: float) -> float:
        lv = _layer_levels(encoder_level, steps_for(total_drop), drop_layers, cut_layer, depth)
        return sum(lv) / depth

    lo, hi = 0.0, encoder_level
    if mean_for(0.0) <= target or not drop_layers:
        total = 0.0
    elif mean_for(hi) >= target:
        total = hi
    else:
        for _ in range(iterations):
            mid = (lo + hi) / 2
            if mean_for(mid) > target:
                lo = mid
            else:
                hi = mid
        total = (lo + hi) / 2
    steps = steps_for(total)
    return ModalitySchedule(encoder_level, tuple(steps),
                            tuple(_layer_levels(encoder_level, steps, drop_layers, cut_layer, depth)))


def scaled_layers(fractions: tuple[float, ...], depth: int) -> tuple[int, ...]:
    """Returns 1-based layer numbers round(f * depth), made strictly increasing and kept inside [1, depth-1]."""
    layers: list[int] = []
    for fraction in fractions:
        layer = max(1, min(depth - 1, round(fraction * depth)))
        if layers and layer <= layers[-1]:
            layer = layers[-1] + 1
        if layer <= depth - 1:
            layers.append(layer)
    return tuple(layers)


def count_at_level(level: float, count: int) -> int:
    """Returns how many of `count` tokens a keep fraction `level` means: max(1, round(level * count)), capped."""
    if count == 0:
        return 0
    return max(1, min(count, round(level * count)))
