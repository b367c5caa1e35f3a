"""Samples a video file's frames at a fixed rate with PyAV (the Qwen-Omni recipe feeds 2 frames per second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seats_fx.media.decode import require_av


def read_video_frames(path: str | Path, fps: float = 2.0, max_frames: int | None = None) -> np.ndarray:
    """Returns RGB frames (T, H, W, 3) uint8 taken at times 0, 1/fps, 2/fps, ... (the last decoded frame at or
    before each time). T is at least 1; `max_frames` caps it (a long video is cut, not resampled)."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    picked: list[np.ndarray] = []
    current, current_time, frame_seconds = None, 0.0, 0.0

    def sample_until(time: float) -> None:
        # the frame on screen at each sampling time before `time` is `current`
        while current is not None and len(picked) / fps < time - 1e-6:
            if max_frames is not None and len(picked) >= max_frames:
                return
            picked.append(current.to_ndarray(format="rgb24"))  # convert only the frames kept

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        frame_seconds = 1.0 / float(rate) if rate else 0.0
        for frame in container.decode(video=0):
            time = float(frame.pts * frame.time_base) if frame.pts is not None else current_time + frame_seconds
            sample_until(time)
            current, current_time = frame, time
            if max_frames is not None and len(picked) >= max_frames:
                break
    # the last frame stays on screen for one frame duration
    sample_until(current_time + max(frame_seconds, 1e-3))
    if not picked:
        raise ValueError(f"{path}: no frame could be decoded")
    return np.stack(picked)
