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
    # window + (modality - 1) * W in two ops (add with alpha); text overwritten by a fill, not a where with
    # a scalar (on a GPU a where allocates and fills the scalar as a tensor first: one more launch)
    slot = torch.add(window, modality - VIDEO, alpha=num_windows).masked_fill(modality == TEXT, 2 * num_windows)
    return slot if valid is None else slot.masked_fill(valid <= 0, 2 * num_windows + 1)


def read_sizes(modality: torch.Tensor, window: torch.Tensor, valid: torch.Tensor | None = None
               ) -> list[SampleSizes]:
    """Returns the SampleSizes of every sample of (B, L) layout tensors with ONE host read.

    modality: TEXT / VIDEO / AUDIO; window: id per media token; valid: 1 for real tokens (None: all real).
    Text and padding tokens must have modality TEXT and window -1 (as build_token_layout gives them).
    """
    return read_sizes_and(modality, window, valid)[0]


def read_sizes_and(modality: torch.Tensor, window: torch.Tensor, valid: torch.Tensor | None = None,
                   extra: torch.Tensor | None = None) -> tuple[list[SampleSizes], list[int]]:
    """Returns (read_sizes' SampleSizes, the values of `extra`) with ONE host read: `extra`, a 1-D integer
    tensor of other values the host needs (checks, counts), travels in the same transfer as the sizes."""
    return _read_sizes(modality, window, valid, modality.shape[1], extra)


def _read_sizes(modality, window, valid, max_windows: int, extra) -> tuple[list[SampleSizes], list[int]]:
    # One count per token into column 2 * (window + 1) + modality + real of a (B, 2W + 5) summary: padding
    # (window -1, TEXT, not real) lands in column 0, real text in 1, and the video / audio tokens of window w
    # in 2w + 4 / 2w + 5 (columns 2 and 3 stay empty), so the transfer has a size the host already knows.
    # A window holds >= 1 token in the usual layouts, so ids stay below L; a larger id (empty windows between
    # sparse frames) lands in the spare last column, and the read is redone at the exact width.
    batch, width = modality.shape[0], 2 * max_windows + 5
    column = (window + 1) * 2 + modality
    column = column + 1 if valid is None else column + (valid > 0)
    summary = torch.zeros(batch, width, dtype=torch.long, device=modality.device)
    summary.scatter_add_(1, column.clamp_(max=width - 1), column.new_ones(()).expand_as(column))
    if extra is not None:
        summary = torch.cat([summary.view(-1), extra.long()])
    values = summary.tolist()  # the one host read
    rows = values if extra is None else [values[b * width:(b + 1) * width] for b in range(batch)]
    extra_values = [] if extra is None else values[batch * width:]
    if any(row[-1] for row in rows):
        return _read_sizes(modality, window, valid, int(window.amax()) + 1, extra)
    sizes = []
    for row in rows:
        counts = row[4:-1]
        last = max((i for i, n in enumerate(counts) if n), default=-1)
        windows = tuple((counts[2 * w], counts[2 * w + 1]) for w in range(last // 2 + 1))
        sizes.append(SampleSizes(row[1], windows, row[0]))
    return sizes, extra_values


def host_table(values: list[int] | list[float], device: torch.device, dtype=torch.long) -> torch.Tensor:
    """Returns `values` on `device` without a stream sync: on CUDA through pinned memory and a non-blocking
    copy (a plain torch.tensor(..., device="cuda") synchronizes the stream after a pageable copy)."""
    table = torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return table
    return table.pin_memory().to(device, non_blocking=True)
