"""Host-known sizes of a token layout, read from the device once per prefill, and small host->device tables.

Every selection size (how many tokens each stage keeps, which (window, modality) groups exist and how big
they are) follows from the layout's counts per window and modality. Reading them once, in one transfer,
lets every later stage run with fixed shapes and no host read of device data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seats_fx.ops.budget import AUDIO, VIDEO

TEXT = 0


@dataclass(frozen=True)
class SampleSizes:
    """One sample's real tokens: text (padding excluded), and (video, audio) tokens per window id."""

    text: int
    windows: tuple[tuple[int, int], ...]
    padding: int = 0

    @property
    def num_windows(self) -> int:
        return len(self.windows)

    @property
    def video(self) -> int:
        return sum(v for v, _ in self.windows)

    @property
    def audio(self) -> int:
        return sum(a for _, a in self.windows)

    @property
    def media(self) -> int:
        return self.video + self.audio

    def groups(self) -> list[tuple[int, int, int]]:
        """Returns (window, modality, size) of every non-empty group, in (window, modality) order."""
        return [(w, kind, n) for w, pair in enumerate(self.windows)
                for kind, n in ((VIDEO, pair[0]), (AUDIO, pair[1])) if n]


def group_slot(modality: torch.Tensor, window: torch.Tensor, num_windows: int,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the group slot of each token: (modality - 1) * W + window for video/audio tokens (video slots
    0..W-1, audio W..2W-1), 2W for text, and 2W + 1 where `valid` is 0 (padding and entries that only fill
    a sample up, which no stage keeps). Works on any leading shape."""
    slot = torch.where(modality != TEXT, (modality - VIDEO) * num_windows + window, 2 * num_windows)
    return slot if valid is None else slot.masked_fill(valid <= 0, 2 * num_windows + 1)


def read_sizes(modality: torch.Tensor, window: torch.Tensor, valid: torch.Tensor | None = None
               ) -> list[SampleSizes]:
    """Returns the SampleSizes of every sample of (B, L) layout tensors with ONE host read.

    modality: TEXT / VIDEO / AUDIO (padding is TEXT); window: id per media token, -1 for text; valid: 1 for
    real tokens (None: all real). Counts go into slots 2*window + (modality - 1) of a (B, 2L + 3) tensor,
    with the text and padding counts in front, so the transfer has a size the host already knows.
    """
    return _read_sizes(modality, window, valid, modality.shape[1])


def _read_sizes(modality, window, valid, max_windows: int) -> list[SampleSizes]:
    batch = modality.shape[0]
    real = torch.ones_like(modality, dtype=torch.bool) if valid is None else valid > 0
    media = (modality != TEXT) & real
    # a window holds >= 1 token in the usual layouts, so ids stay below L; a larger id (empty windows between
    # sparse frames) lands in the spare last slot, and the read is redone at the exact width
    slot = torch.where(media & (window < max_windows), window * 2 + modality - VIDEO, 2 * max_windows)
    summary = torch.zeros(batch, 2 * max_windows + 3, dtype=torch.long, device=modality.device)
    summary[:, 2:].scatter_add_(1, slot, media.long())
    summary[:, 0] = ((modality == TEXT) & real).sum(1)
    summary[:, 1] = (~real).sum(1)
    rows = summary.tolist()  # the one host read
    if any(row[-1] for row in rows):
        return _read_sizes(modality, window, valid, int(window.amax()) + 1)
    sizes = []
    for row in rows:
        counts = row[2:-1]
        last = max((i for i, n in enumerate(counts) if n), default=-1)
        windows = tuple((counts[2 * w], counts[2 * w + 1]) for w in range(last // 2 + 1))
        sizes.append(SampleSizes(row[0], windows, row[1]))
    return sizes


def host_table(values: list[int] | list[float], device: torch.device, dtype=torch.long) -> torch.Tensor:
    """Returns `values` on `device` without a stream sync: on CUDA through pinned memory and a non-blocking
    copy (a plain torch.tensor(..., device="cuda") synchronizes the stream after a pageable copy)."""
    table = torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return table
    return table.pin_memory().to(device, non_blocking=True)
