"""Writes a small real video file: moving shapes and a tone that changes pitch each second, encoded with a
real codec (MPEG-4 Part 2 video, AAC audio, in an MP4 container) through PyAV. It is the CLI's and the
tests' sample input; `python -m seats_fx.media.sample_clip OUT.mp4` regenerates the shipped one."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from seats_fx.media.decode import require_av


@dataclass(frozen=True)
class SampleClipSpec:
    seconds: int = 6
    fps: int = 10
    width: int = 160
    height: int = 112
    sample_rate: int = 16000
    # one pitch per second, cycling: the audio track changes where the picture does
    pitches_hz: tuple[float, ...] = (330.0, 440.0, 550.0, 660.0)


def _frame(spec: SampleClipSpec, index: int) -> np.ndarray:
    """A dark background, a red disc crossing left to right and a green square bouncing up and down."""
    t = index / spec.fps
    ys, xs = np.mgrid[0:spec.height, 0:spec.width]
    image = np.full((spec.height, spec.width, 3), 24, dtype=np.uint8)
    cx = (t / spec.seconds) * spec.width
    cy = spec.height / 2
    image[(xs - cx) ** 2 + (ys - cy) ** 2 < (spec.height / 6) ** 2] = (220, 40, 40)
    side = spec.height // 4
    top = int((0.5 + 0.4 * math.sin(2 * math.pi * t / 2)) * (spec.height - side))
    left = spec.width - 2 * side
    image[top:top + side, left:left + side] = (40, 200, 60)
    return image


def _tone(spec: SampleClipSpec) -> np.ndarray:
    """Mono float32 samples in [-0.5, 0.5]: second k plays pitches_hz[k % len]."""
    t = np.arange(spec.seconds * spec.sample_rate) / spec.sample_rate
    pitch = np.asarray(spec.pitches_hz)[(t.astype(int)) % len(spec.pitches_hz)]
    phase = 2 * np.pi * np.cumsum(pitch) / spec.sample_rate
    return (0.5 * np.sin(phase)).astype(np.float32)


def write_sample_clip(path: str | Path, spec: SampleClipSpec = SampleClipSpec()) -> Path:
    """Writes the clip to `path` (an .mp4) and returns the path."""
    av = require_av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.bit_rate = 200_000
        audio = container.add_stream("aac", rate=spec.sample_rate)
        audio.layout = "mono"
        for index in range(spec.seconds * spec.fps):
            frame = av.VideoFrame.from_ndarray(_frame(spec, index), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        samples = _tone(spec)
        chunk = 1024  # AAC's frame size
        for start in range(0, len(samples), chunk):
            piece = samples[start:start + chunk]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="flt", layout="mono")
            frame.sample_rate = spec.sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, spec.sample_rate)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m seats_fx.media.sample_clip OUT.mp4")
    print(write_sample_clip(sys.argv[1]))
