"""Saves a tiny random-weight Qwen2.5-Omni checkpoint directory laid out like a real one: the model
(save_pretrained), the tokenizer with its chat template, and the processor settings (preprocessor_config.json
holding the Whisper feature extractor and Qwen2-VL image settings, video_preprocessor_config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniThinkerForConditionalGeneration,
                          WhisperFeatureExtractor)

from seats_fx.media.video_processor import DEFAULT_VIDEO_SETTINGS
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config, tiny_qwen2_5_omni_full_config
from seats_fx.models.tiny_tokenizer import tiny_tokenizer

# Frames up to 112 x 168 pixels keep a tiny checkpoint's video short (the real ones allow 768 * 28 * 28)
TINY_VIDEO_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 112 * 168}
# 60 s of audio per prompt (real Qwen2.5-Omni checkpoints use chunk_length 300)
TINY_AUDIO_SECONDS = 60


def _processor_files(directory: Path, vocab_size: int) -> None:
    tiny_tokenizer(vocab_size).save_pretrained(directory)
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=TINY_AUDIO_SECONDS)
    vision = {**DEFAULT_VIDEO_SETTINGS, "size": TINY_VIDEO_PIXELS, "do_resize": True, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True}
    preprocessor = {**features.to_dict(), **vision, "feature_extractor_type": "WhisperFeatureExtractor",
                    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5OmniProcessor"}
    preprocessor.pop("mel_filters", None)  # recomputed from the sizes on load
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    video = {**vision, "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2_5OmniProcessor"}
    (directory / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))


def save_tiny_checkpoint(directory: str | Path, spec: TinySpec = TinySpec(), full_model: bool = False,
                         seed: int = 0) -> Path:
    """Writes a tiny checkpoint to `directory` and returns it. `full_model` saves thinker + talker +
    token2wav (model_type qwen2_5_omni, as the released checkpoints); otherwise the thinker alone."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if full_model:
        model = Qwen2_5OmniForConditionalGeneration(tiny_qwen2_5_omni_full_config(spec))
    else:
        model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(spec))
    model.save_pretrained(directory)
    if full_model:
        # released full checkpoints ship speaker prompts for the talker; from_pretrained requires the file.
        # Text answers never read it: one zero placeholder speaker
        speaker = {"bos_token": 1000, "cond": torch.zeros(1, 32), "ref_mel": torch.zeros(1, 80, 80)}
        torch.save({"Chelsie": speaker}, directory / "spk_dict.pt")
    _processor_files(directory, spec.vocab_size)
    return directory
