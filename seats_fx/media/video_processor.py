"""A video processor for machines without torchvision.

transformers' `Qwen2VLVideoProcessor` (the one Qwen-Omni processors use) needs torchvision, and a torchvision
build that loads beside the CPU build of torch 2.13 does not exist on the package index this project installs
from. This class produces the same outputs (`pixel_values_videos`, `video_grid_thw`) from transformers'
PIL-backed Qwen2-VL image processor: every frame is resized, rescaled, normalized and cut into patches there,
and only the grouping of consecutive frames into temporal patches happens here. With torchvision present,
`seats_fx.processing.load_processor` uses transformers' own video processor instead."""

from __future__ import annotations

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

# what transformers' Qwen2VLVideoProcessor sets by default and checkpoints save
DEFAULT_VIDEO_SETTINGS = {
    "size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
    "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}


class FrameGroupVideoProcessor:
    """Turns videos given as (T, H, W, 3) uint8 frame arrays into Qwen2-VL video patches."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, size: dict | None = None, patch_size: int = 14, temporal_patch_size: int = 2,
                 merge_size: int = 2, image_mean=None, image_std=None, **_unused_saved_settings):
        self.size = dict(size or DEFAULT_VIDEO_SETTINGS["size"])
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.merge_size = merge_size
        self.frame_processor = Qwen2VLImageProcessorPil(
            size=self.size, patch_size=patch_size, temporal_patch_size=1, merge_size=merge_size,
            image_mean=image_mean or DEFAULT_VIDEO_SETTINGS["image_mean"],
            image_std=image_std or DEFAULT_VIDEO_SETTINGS["image_std"])

    @classmethod
    def from_settings(cls, settings: dict) -> "FrameGroupVideoProcessor":
        """Builds one from a saved `video_preprocessor_config.json`'s values (unknown keys are ignored)."""
        merged = dict(DEFAULT_VIDEO_SETTINGS)
        merged.update({k: v for k, v in settings.items() if k in DEFAULT_VIDEO_SETTINGS})
        return cls(**merged)

    def __call__(self, videos, size: dict | None = None, return_tensors: str | None = None, **_ignored) -> BatchFeature:
        """`videos`: one (T, H, W, 3) array or a list of them. `size` overrides the pixel range per call.
        Other video kwargs the omni processor passes along (fps, ...) do not change the pixels."""
        if isinstance(videos, (np.ndarray, torch.Tensor)) and np.ndim(videos) == 4:
            videos = [videos]
        patches, grids = [], []
        for video in videos:
            video_patches, grid = self._one_video(np.asarray(video), size)
            patches.append(video_patches)
            grids.append(grid)
        data = {"pixel_values_videos": np.concatenate(patches), "video_grid_thw": np.asarray(grids, dtype=np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _one_video(self, frames: np.ndarray, size: dict | None) -> tuple[np.ndarray, list[int]]:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"a video must be a (frames, height, width, 3) array, got shape {frames.shape}")
        temporal = self.temporal_patch_size
        # like Qwen2VLVideoProcessor: a frame count that is not a multiple repeats the last frame
        if len(frames) % temporal:
            frames = np.concatenate([frames, np.repeat(frames[-1:], temporal - len(frames) % temporal, axis=0)])
        kwargs = {"size": size} if size is not None else {}
        out = self.frame_processor(list(frames), return_tensors=None, **kwargs)
        per_frame = np.asarray(out["pixel_values"], dtype=np.float32)
        _, grid_h, grid_w = (int(x) for x in out["image_grid_thw"][0])
        patch = self.patch_size
        groups = len(frames) // temporal
        # frame patches (T, N, C, p, p) -> temporal patches (T/t, N, C, t, p, p): channels before time, as in
        # the Qwen2-VL vision tower's Conv3d input
        per_frame = per_frame.reshape(groups, temporal, grid_h * grid_w, 3, patch, patch)
        grouped = per_frame.transpose(0, 2, 3, 1, 4, 5).reshape(groups * grid_h * grid_w, 3 * temporal * patch * patch)
        return grouped, [groups, grid_h, grid_w]
