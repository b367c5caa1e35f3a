"""Token layout: which modality and which temporal window each token of an omni prompt belongs to."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from seats_fx.ops.budget import AUDIO, VIDEO

TEXT = 0


@dataclass(frozen=True)
class TokenLayout:
    """Per-token facts of a batch, all (B, L) long tensors.

    modality: TEXT / VIDEO / AUDIO (image tokens count as VIDEO, one window per image);
    window: temporal window id, numbered 0.. per sample across all media blocks (TEXT tokens get -1);
    valid: 1 for real tokens, 0 for padding (padding counts as TEXT that is never selected).
    """

    modality: torch.Tensor
    window: torch.Tensor
    valid: torch.Tensor

    def num_windows(self, sample: int) -> int:
        """Returns the number of windows of one sample (host sync; for eager code only)."""
        return int(self.window[sample].max().item()) + 1 if bool((self.window[sample] >= 0).any()) else 0

    def count(self, modality: int, sample: int = 0) -> int:
        """Returns how many tokens of `modality` a sample holds (host sync; for eager code only)."""
        return int((self.modality[sample] == modality).sum().item())


def build_token_layout(input_ids: torch.Tensor, temporal_positions: torch.Tensor, attention_mask: torch.Tensor | None,
                       video_ids: tuple[int, ...], audio_ids: tuple[int, ...], image_ids: tuple[int, ...],
                       positions_per_window: int) -> TokenLayout:
    """Returns the layout of a batch from its token ids and temporal (TMRoPE) positions (layout_on_host's
    rule), on their device. Reads them to the host once (eager callers: the encode step, the reference)."""
    valid = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    batch, length = input_ids.shape
    host = torch.cat([input_ids.reshape(-1), temporal_positions.reshape(-1), valid.reshape(-1)]).cpu().numpy()
    ids, temporal, valid_on_host = host.reshape(3, batch, length)
    modality, window = layout_on_host(ids, temporal, valid_on_host, video_ids, audio_ids, image_ids,
                                      positions_per_window)
    to_device = functools.partial(torch.as_tensor, device=input_ids.device)
    return TokenLayout(modality=to_device(modality), window=to_device(window), valid=valid)


def layout_on_host(input_ids: np.ndarray, temporal_positions: np.ndarray, valid: np.ndarray,
                   video_ids: tuple[int, ...], audio_ids: tuple[int, ...], image_ids: tuple[int, ...],
                   positions_per_window: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (modality, window), (B, L) int64 arrays, of a batch from host copies of its token ids, temporal
    (TMRoPE) positions and padding mask (1 real, 0 padding).

    A media block is a maximal run of non-text tokens (with audio in video, one clip's interleaved video and
    audio chunks). Inside a block the window of a token is (t - t_block_start) // positions_per_window, the
    same rule the model's processor uses to interleave chunks; images are one window each. Windows are
    numbered 0.. per sample across its blocks; text and padding get window -1 and modality TEXT.
    Computed on the host (numpy): the selection glue reads the ids and positions once per prefill and
    launches no device work for its layout.
    """
    is_video, is_audio, is_image = (np.isin(input_ids, ids) for ids in (video_ids, audio_ids, image_ids))
    is_media = (is_video | is_audio | is_image) & (valid > 0)
    modality = np.where(is_audio, AUDIO, np.where(is_video | is_image, VIDEO, TEXT)) * is_media
    window = np.full(input_ids.shape, -1, dtype=np.int64)
    if not is_media.any():
        return modality.astype(np.int64), window
    previous = np.pad(is_media, ((0, 0), (1, 0)))[:, :-1]
    # the media tokens in row-major order: a block is a run of them that starts at a block start, and no
    # block spans two samples (a sample's first token starts a block when it is media)
    starts = (is_media & ~previous)[is_media]
    first = np.flatnonzero(starts)
    block = np.cumsum(starts) - 1
    time = temporal_positions[is_media].astype(np.int64)
    offset = time - np.minimum.reduceat(time, first)[block]
    window_in_block = np.where(is_image[is_media], 0, offset // positions_per_window)
    windows_per_block = np.maximum.reduceat(window_in_block + 1, first)
    # windows before each block in its own sample: an exclusive running sum that restarts per sample
    before = np.cumsum(windows_per_block) - windows_per_block
    sample_of_block = np.nonzero(is_media)[0][first]
    first_block_of_sample = np.searchsorted(sample_of_block, sample_of_block)
    window[is_media] = (before - before[first_block_of_sample])[block] + window_in_block
    return modality.astype(np.int64), window
