"""Decodes a video file's audio track with PyAV. transformers decodes a video's own audio only through
torchcodec with FFmpeg; PyAV ships its FFmpeg in the wheel, so the track is decoded here and handed to the
processor as the video's audio (`audio_from_video_indices`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def require_av():
    """Returns the `av` module, or raises naming the extra that installs it."""
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("reading or writing video files needs PyAV: pip install 'seats-fx[video]' (or av)") from error
    return av


def read_audio_track(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """Returns the first audio stream of `path` as mono float32 samples at `sample_rate`, or None when the
    file has no audio stream."""
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pieces = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)


def video_duration_seconds(path: str | Path) -> float:
    """Returns the duration of the first video stream of `path`, in seconds."""
    av = require_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration) / 1_000_000
