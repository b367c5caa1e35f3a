"""Progress on stderr for the CLI's long steps: a ticking elapsed-time line on a terminal, start and end
lines otherwise (logs stay readable), and a token counter for generate()."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

from transformers.generation.streamers import BaseStreamer


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.detail = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    @contextmanager
    def step(self, label: str) -> Iterator["Progress"]:
        """Shows `label` with the seconds spent so far (and `self.detail`, which the step may update)."""
        if not self.enabled:
            yield self
            return
        self.detail = ""
        start = time.perf_counter()
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                self._write(f"\r  {label} ... {time.perf_counter() - start:5.1f} s {self.detail}\033[K")

        ticker = threading.Thread(target=tick, daemon=True) if self.live else None
        if ticker:
            ticker.start()
        else:
            self._write(f"  {label} ...\n")
        try:
            yield self
        finally:
            stop.set()
            if ticker:
                ticker.join()
            line = f"  {label}: done in {time.perf_counter() - start:.1f} s {self.detail}"
            self._write(f"\r{line}\033[K\n" if self.live else f"{line}\n")


class TokenCounter(BaseStreamer):
    """A generate() streamer that counts new tokens into a Progress step's detail."""

    def __init__(self, progress: Progress, max_new_tokens: int) -> None:
        self.progress, self.max_new_tokens = progress, max_new_tokens
        self.calls = 0

    def put(self, value) -> None:
        self.calls += 1
        # the first put is the prompt; every later one is one new token per sample
        self.progress.detail = (f"({self.calls - 1}/{self.max_new_tokens} tokens)" if self.calls > 1
                                else "(compiling on first use, then the prefill)")

    def end(self) -> None:
        pass
