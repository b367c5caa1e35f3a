"""Token layout: which modality and which temporal window each token of an omni prompt belongs to."""

from __future__ import annotations

from dataclasses import dataclass

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
    """Returns the layout of a batch from its token ids and temporal (TMRoPE) positions.

    A media block is a maximal run of non-text tokens (with audio in video, one clip's interleaved video and
    audio chunks). Inside a block the window of a token is (t - t_block_start) // positions_per_window, the
    same rule the model's processor uses to interleave chunks; images are one window each. Pure tensor
    code with fixed shapes (no host syncs), so it can run inside a graph.
    """
    valid = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    is_video = torch.isin(input_ids, torch.tensor(video_ids, device=input_ids.device))
    is_audio = torch.isin(input_ids, torch.tensor(audio_ids, device=input_ids.device))
    is_image = torch.isin(input_ids, torch.tensor(image_ids, device=input_ids.device))
    is_media = (is_video | is_audio | is_image) & (valid > 0)
    modality = torch.where(is_audio, AUDIO, torch.where(is_video | is_image, VIDEO, TEXT)) * is_media.long()

    starts = is_media & ~torch.nn.functional.pad(is_media, (1, 0))[:, :-1]
    block = torch.cumsum(starts.long(), dim=1) - 1  # block id per token (valid on media tokens)
    batch, length = input_ids.shape
    block_index = torch.where(is_media, block, torch.full_like(block, length))  # spare slot for text
    big = torch.iinfo(torch.long).max
    block_start = torch.full((batch, length + 1), big, dtype=torch.long, device=input_ids.device)
    block_start = block_start.scatter_reduce(1, block_index, temporal_positions.long(), reduce="amin")
    offset_in_block = temporal_positions.long() - block_start.gather(1, block_index)
    window_in_block = torch.where(is_image, torch.zeros_like(offset_in_block),
                                  torch.div(offset_in_block, positions_per_window, rounding_mode="floor"))
    window_in_block = torch.where(is_media, window_in_block, torch.zeros_like(window_in_block))
    windows_per_block = torch.zeros((batch, length + 1), dtype=torch.long, device=input_ids.device)
    windows_per_block = windows_per_block.scatter_reduce(1, block_index, window_in_block + 1, reduce="amax")
    first_window = torch.cumsum(windows_per_block, dim=1) - windows_per_block
    window = torch.where(is_media, first_window.gather(1, block_index) + window_in_block,
                         torch.full_like(window_in_block, -1))
    return TokenLayout(modality=modality, window=window, valid=valid)
