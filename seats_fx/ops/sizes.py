"""Host-known sizes of a token layout, and small host->device tables.

Every selection size (how many tokens each stage keeps, which (window, modality) groups exist and how big
they are) follows from the layout's counts per window and modality. The glue knows the layout on the host
(one read of the ids and positions per prefill), so every stage runs with fixed shapes and no host read of
device data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def group_slot(modality, window, num_windows: int, valid=None):
    """Returns the group slot of each token: (modality - 1) * W + window for video/audio tokens (video slots
    0..W-1, audio W..2W-1), 2W for text, and 2W + 1 where `valid` is 0 (padding and entries that only fill
    a sample up, which no stage keeps). Works on any leading shape, on torch tensors or host (numpy) arrays."""
    if isinstance(modality, np.ndarray):
        slot = np.where(modality == TEXT, 2 * num_windows, window + (modality - VIDEO) * num_windows)
        return slot if valid is None else np.where(valid <= 0, 2 * num_windows + 1, slot)
    # window + (modality - 1) * W in two ops (add with alpha); text overwritten by a fill, not a where with
    # a scalar (on a GPU a where allocates and fills the scalar as a tensor first: one more launch)
    slot = torch.add(window, modality - VIDEO, alpha=num_windows).masked_fill(modality == TEXT, 2 * num_windows)
    return slot if valid is None else slot.masked_fill(valid <= 0, 2 * num_windows + 1)


def sizes_on_host(modality: np.ndarray, window: np.ndarray, valid: np.ndarray | None = None) -> list[SampleSizes]:
    """Returns the SampleSizes of every sample of (B, L) host layout arrays (no device involved).

    modality: TEXT / VIDEO / AUDIO; window: id per media token; valid: 1 for real tokens (None: all real).
    Text and padding tokens must have modality TEXT and window -1 (as the layout gives them).
    """
    real = np.ones(modality.shape, dtype=bool) if valid is None else valid > 0
    sizes = []
    for row_modality, row_window, row_real in zip(modality, window, real):
        media = row_modality != TEXT
        groups = 2 * row_window[media] + (row_modality[media] - VIDEO)
        counts = np.bincount(groups, minlength=2 * (int(groups.max()) // 2 + 1) if groups.size else 0).tolist()
        windows = tuple(zip(counts[0::2], counts[1::2]))
        sizes.append(SampleSizes(int((row_real & ~media).sum()), windows, int((~row_real).sum())))
    return sizes


def read_sizes(modality: torch.Tensor, window: torch.Tensor, valid: torch.Tensor | None = None
               ) -> list[SampleSizes]:
    """Returns the SampleSizes of every sample of (B, L) layout tensors with ONE host read (sizes_on_host).

    For eager callers (the reference, the stage functions called alone); the glue computes its layout
    on the host and never reads it back.
    """
    valid = torch.ones_like(modality) if valid is None else valid
    host = torch.stack([modality, window, valid.to(modality.dtype)]).cpu().numpy()
    return sizes_on_host(*host)


def host_table(values: list[int] | list[float] | np.ndarray, device: torch.device, dtype=torch.long) -> torch.Tensor:
    """Returns `values` on `device` without a stream sync: on CUDA through pinned memory and a non-blocking
    copy (a plain torch.tensor(..., device="cuda") synchronizes the stream after a pageable copy). A numpy
    array is taken as one block (torch.tensor walks a list element by element)."""
    table = torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return table
    return table.pin_memory().to(device, non_blocking=True)
