"""The user's path in one call: a checkpoint, a video file and a question -> the thinker's text answer, with
the prompt's prefill pruned by seats and what it kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from seats_fx.checkpoint import LoadedCheckpoint
from seats_fx.compile_model import compile_model
from seats_fx.config import SeatsConfig
from seats_fx.models import adapter_for
from seats_fx.models.layout import TokenLayout
from seats_fx.processing import video_question_inputs
from seats_fx.progress import Progress, TokenCounter
from seats_fx.runtime import SeatsStats, last_stats


@dataclass
class Answer:
    """text: the decoded answer; new_tokens: its ids; stats: what the pruned prefill kept (None when the
    prefill ran unpruned: see `skipped`); layout: modality and window of every prompt token."""

    text: str
    new_tokens: list[int]
    stats: SeatsStats | None
    layout: TokenLayout
    config: SeatsConfig
    prompt_tokens: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> str | None:
        if self.stats is None:
            return "no seats prefill ran"
        return None if self.stats.pruned else self.stats.skipped


def answer_video_question(checkpoint: LoadedCheckpoint, video: str | Path, question: str,
                          options: Mapping[str, Any] | None = None, max_new_tokens: int = 32, fps: float = 2.0,
                          max_pixels: int | None = None, progress: Progress | None = None) -> Answer:
    """Encodes the video (frames and audio track) with the checkpoint's processor, compiles the thinker with
    seats (in place; `options` as for the backend), and greedily generates up to `max_new_tokens` tokens."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    progress = progress or Progress(enabled=False)
    config = SeatsConfig.from_options(dict(options or {}))
    thinker = checkpoint.thinker
    seconds = {}

    start = time.perf_counter()
    with progress.step("reading and encoding the video"):
        inputs = video_question_inputs(checkpoint.processor, video, question, fps=fps, max_pixels=max_pixels)
    seconds["processing"] = time.perf_counter() - start
    adapter = adapter_for(thinker)
    with torch.no_grad():
        _, _, layout = adapter.positions_and_layout(dict(inputs), inputs["attention_mask"], config.window_seconds)

    existing = getattr(thinker, "seats_backend", None)
    if existing is None:
        compile_model(thinker, config)
    elif existing.config != config:  # its graphs were rewritten for those options: never mix them
        raise ValueError(f"this thinker is already compiled with other seats options ({existing.config}); "
                         "load it again to use these")
    start = time.perf_counter()
    with progress.step("compile, pruned prefill, decode") as step:
        counter = TokenCounter(step, max_new_tokens)
        with torch.inference_mode():
            output = thinker.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=counter)
    seconds["generate"] = time.perf_counter() - start
    # the prefill's stats: decode steps leave them in place
    stats = last_stats()
    prompt_tokens = int(inputs["input_ids"].shape[1])
    new_tokens = output[0, prompt_tokens:].tolist()
    text = checkpoint.processor.batch_decode([new_tokens], skip_special_tokens=True)[0]
    return Answer(text=text, new_tokens=new_tokens, stats=stats, layout=layout, config=config,
                  prompt_tokens=prompt_tokens, seconds=seconds)
