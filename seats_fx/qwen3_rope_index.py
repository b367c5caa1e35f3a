"""Qwen3-Omni's TMRoPE positions without a host loop over the tokens of an audio-in-video prompt.

transformers' Qwen3-Omni `get_rope_index` interleaves a video's positions with its audio's one column at a time:
each step reads one element of each (two reads of tensor data on the host, a few dispatcher calls) and appends a
one-column slice, then concatenates them all. Measured on this CPU (tiny thinker): about 8.6 us per media token,
15 ms for a 60 s clip of 1,740 media tokens; a real 60 s clip has several thousand, every prefill, with the GPU
idle (Qwen2.5-Omni's per-token chunk loop took 190 ms of a 320 ms pruned prefill on an H200: seats_fx.rope_index).

The interleave takes the video column while its temporal position is <= the audio's, i.e. it merges two
sorted sequences, video first on ties: that is a stable sort of the video columns followed by the audio columns
by their temporal row. `get_rope_index` here computes the positions in the same order of the same operations
with that merge done by one gather, and transformers' own function runs wherever its preconditions do not
hold (no input ids or grids, positions not sorted, an unexpected layout). It also runs outside Dynamo: its
work is host work on a handful of small tensors. Positions and deltas are equal to transformers' (property-tested
against it).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from seats_fx.instance_methods import override_methods

_NAME = "get_rope_index"


class _Unsupported(Exception):
    """Inputs outside what this implementation reproduces: transformers' own function runs."""


def merge_order(video_time: np.ndarray, audio_time: np.ndarray) -> np.ndarray:
    """Returns the order of the columns [video..., audio...] that transformers' interleave produces: video
    while its temporal position <= the audio's. Both must be sorted (else _Unsupported)."""
    if any(times.size > 1 and np.any(np.diff(times) < 0) for times in (video_time, audio_time)):
        raise _Unsupported("positions not sorted")
    keys = np.concatenate([video_time, audio_time])
    return np.argsort(keys, kind="stable")


def _next_start(piece: torch.Tensor):
    """The position after a piece, as transformers computes it (its max + 1, in its dtype)."""
    return piece.max() + 1


def _arange(length, start):
    return torch.arange(length).view(1, -1).expand(3, -1) + start


class _Sample:
    """The positions of one sample (its unpadded tokens), built piece by piece."""

    def __init__(self, model: nn.Module, tokens: list[int], feature_lengths, grids, counters: dict[str, int]) -> None:
        self.model, self.tokens, self.feature_lengths, self.counters = model, tokens, feature_lengths, counters
        self.image_grid, self.video_grid, self.second_per_grid = grids
        self.pieces: list[torch.Tensor] = []
        self.cursor = 0  # the token where the next item's text starts

    def _start(self):
        return _next_start(self.pieces[-1]) if self.pieces else 0

    def _vision(self, start, kind: str, index: int) -> tuple[torch.Tensor, int]:
        """A vision item's positions (the model's own helper) and its token count."""
        config, merge = self.model.config, self.model.spatial_merge_size
        grid = self.image_grid if kind == "image" else self.video_grid
        frames = grid[index][0]
        if kind == "image":
            time = (torch.arange(frames) * 1 * config.position_id_per_seconds).float()
        else:
            per_grid = self.second_per_grid[index].cpu().float()
            time = (torch.arange(frames) * per_grid * config.position_id_per_seconds).float()
        positions = self.model.get_llm_pos_ids_for_vision(start, index, merge, time, grid[:, 1], grid[:, 2])
        return positions, int(grid[index].prod() // (merge ** 2))

    def _audio(self, start, index: int) -> tuple[torch.Tensor, int]:
        length = self.feature_lengths(index)
        return _arange(length, start), int(length)

    def item(self, remaining: dict[str, int]) -> None:
        """Adds the text before the next media item, its start markers, its positions and its end markers."""
        tokens, config, end = self.tokens, self.model.config, len(self.tokens) + 1
        start = self._start()
        has_vision = config.image_token_id in tokens or config.video_token_id in tokens
        vision_at = (tokens.index(config.vision_start_token_id, self.cursor)
                     if has_vision and (remaining["video"] > 0 or remaining["image"] > 0) else end)
        audio_at = (tokens.index(config.audio_start_token_id, self.cursor)
                    if config.audio_token_id in tokens and remaining["audio"] > 0 else end)
        at = min(vision_at, audio_at)
        text = at - self.cursor
        if text != 0:
            self.pieces.append(_arange(text, start))
            start += text
        audio_in_video = at == vision_at and vision_at + 1 == audio_at
        markers = 2 if audio_in_video else 1
        self.pieces.append(_arange(markers, start))
        start += markers
        if at == audio_at:
            positions, length = self._audio(start, self.counters["audio"])
            self.pieces.append(positions)
            self._consume(("audio",), remaining, text + markers + length + markers)
        elif at == vision_at and tokens[vision_at + 1] in (config.image_token_id, config.video_token_id):
            kind = "image" if tokens[vision_at + 1] == config.image_token_id else "video"
            positions, length = self._vision(start, kind, self.counters[kind])
            self.pieces.append(positions)
            self._consume((kind,), remaining, text + markers + length + markers)
        elif audio_in_video:
            audio, audio_length = self._audio(start, self.counters["audio"])
            video, video_length = self._vision(start, "video", self.counters["video"])
            self._interleave(video, audio)
            self._consume(("audio", "video"), remaining, text + markers + audio_length + video_length + markers)
        self.pieces.append(_arange(markers, self._start()))

    def _interleave(self, video: torch.Tensor, audio: torch.Tensor) -> None:
        """Appends video and audio columns merged by temporal position (video first on ties); the last piece
        is then the run of one stream's columns that the other's end left, as in transformers' loop."""
        if video.shape[1] == 0 or audio.shape[1] == 0:
            raise _Unsupported("an empty stream")  # transformers appends the other stream whole, in pieces
        # transformers compares element pairs after type promotion: the common dtype of the two streams
        common = torch.promote_types(video.dtype, audio.dtype)
        order = merge_order(*(stream[0].to(common).numpy().astype(np.float64) for stream in (video, audio)))
        merged = torch.cat([video.to(common), audio.to(common)], dim=1)[:, torch.from_numpy(order)]
        from_video = order < video.shape[1]
        # both streams are non-empty, so the merged order switches streams at least once before its last run
        tail = int(np.argmax(from_video[::-1] != from_video[-1]))
        self.pieces.append(merged[:, :len(order) - tail])
        self.pieces.append((video if from_video[-1] else audio)[:, -tail:])

    def _consume(self, kinds: tuple[str, ...], remaining: dict[str, int], tokens: int) -> None:
        self.cursor += int(tokens)
        for kind in kinds:
            self.counters[kind] += 1
            remaining[kind] -= 1

    def positions(self, media_items: int, remaining: dict[str, int]) -> torch.Tensor:
        for _ in range(media_items):
            self.item(remaining)
        if self.cursor < len(self.tokens):
            self.pieces.append(_arange(len(self.tokens) - self.cursor, self._start()))
        return torch.cat([piece.float() for piece in self.pieces], dim=1).reshape(3, -1)


def _positions(model: nn.Module, input_ids, image_grid_thw, video_grid_thw, attention_mask, use_audio_in_video,
               audio_seqlens, second_per_grids):
    config = model.config
    lengths_of = getattr(sys.modules[type(model).__module__], "_get_feat_extract_output_lengths", None)
    if lengths_of is None:
        raise _Unsupported("no audio length function")
    ids_host = input_ids.cpu()
    keep = (attention_mask == 1).cpu()
    position_ids = torch.zeros(3, input_ids.shape[0], input_ids.shape[1], dtype=torch.float, device=input_ids.device)
    counters = {"image": 0, "video": 0, "audio": 0}
    deltas = []
    vision_start, audio_start = config.vision_start_token_id, config.audio_start_token_id

    def feature_lengths(index: int):
        return lengths_of(audio_seqlens[index], config.audio_config.n_window)

    for row in range(ids_host.shape[0]):
        tokens = ids_host[row][keep[row]].tolist()
        starts = [at for at, token in enumerate(tokens) if token == vision_start]  # (config reads are slow)
        if starts and starts[-1] + 1 >= len(tokens):
            raise _Unsupported("a vision start token ends the prompt")
        after = [tokens[at + 1] for at in starts]
        audios = tokens.count(audio_start)
        images = after.count(config.image_token_id)
        videos = after.count(audio_start if use_audio_in_video else config.video_token_id)
        items = images + audios if use_audio_in_video else images + videos + audios
        remaining = {"image": images, "video": videos, "audio": audios}
        sample = _Sample(model, tokens, feature_lengths, (image_grid_thw, video_grid_thw, second_per_grids), counters)
        positions = sample.positions(items, remaining)
        position_ids[..., row, keep[row].to(input_ids.device)] = positions.to(position_ids.device)
        deltas.append(positions.max() + 1 - len(tokens))
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


@torch.compiler.disable
def fast_get_rope_index(self, input_ids=None, image_grid_thw=None, video_grid_thw=None, attention_mask=None,
                        use_audio_in_video=False, audio_seqlens=None, second_per_grids=None):
    """Qwen3-Omni's get_rope_index with the audio-in-video interleave as one gather (module docstring)."""
    original = getattr(type(self), _NAME)
    args = (input_ids, image_grid_thw, video_grid_thw, attention_mask, use_audio_in_video, audio_seqlens,
            second_per_grids)
    if input_ids is None or attention_mask is None or (image_grid_thw is None and video_grid_thw is None):
        return original(self, *args)
    try:
        return _positions(self, *args)
    except _Unsupported:
        return original(self, *args)


def _qwen3_rope_index():
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as modeling

    return modeling.Qwen3OmniMoePreTrainedModelForConditionalGeneration.get_rope_index


def use_fast_qwen3_rope_index(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Gives every module of `model` that computes Qwen3-Omni's TMRoPE positions with transformers' shared
    implementation (the thinker and its base model) the version above, in place, and returns `model`;
    enabled=False gives them transformers' back. Positions are unchanged."""
    shared = _qwen3_rope_index()

    def overrides_for(module: nn.Module) -> dict:
        return {_NAME: fast_get_rope_index} if getattr(type(module), _NAME, None) is shared else {}

    if not override_methods(model, overrides_for, enabled):
        raise ValueError(f"expected a Qwen3-Omni thinker or full model (a module with transformers' Qwen3-Omni "
                         f"{_NAME}), got {type(model).__name__}")
    return model
