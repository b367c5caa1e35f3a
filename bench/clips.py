"""The benchmark clip: token counts per 2 s window for each model family's processor."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """What a family's processor makes of a frame and a second of audio."""

    name: str
    pixels_per_token: int  # patch size x spatial merge
    audio_tokens_per_second: float


QWEN2_5_OMNI = Family("qwen2_5_omni", 28, 25.0)
QWEN3_OMNI = Family("qwen3_omni_moe", 32, 13.0)  # audio: 6000 mel frames -> 780 tokens per 60 s
FRAME = (252, 448)  # a 16:9 source at 2 fps inside the processors' pixel bounds
TEXT_TOKENS = 60  # system prompt, question and chat markup


def tokens_per_grid(family: Family, frame: tuple[int, int] = FRAME) -> int:
    """Returns LLM video tokens per 2-frame grid: the processor rounds each side to a token multiple."""
    rows, cols = (max(1, round(side / family.pixels_per_token)) for side in frame)
    return rows * cols


def clip_windows(family: Family, seconds: int, frame: tuple[int, int] = FRAME) -> list[tuple[int, int]]:
    """Returns (video, audio) LLM tokens per 2 s window of a clip at 2 fps (one grid per second)."""
    per_grid = tokens_per_grid(family, frame)
    windows = []
    for start in range(0, seconds, 2):
        span = min(2, seconds - start)
        audio = math.floor((start + span) * family.audio_tokens_per_second) - \
            math.floor(start * family.audio_tokens_per_second)
        windows.append((span * per_grid, audio))
    return windows
