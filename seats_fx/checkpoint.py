"""Loads a Qwen-Omni checkpoint directory (released or tiny): the thinker, ready for generate(), and its
processor. Full checkpoints (thinker + talker) load without the talker: seats answers in text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seats_fx.processing import load_processor

# model_type in config.json -> (family, transformers class name, whether it is a full model)
_MODEL_TYPES = {
    "qwen2_5_omni_thinker": ("qwen2_5_omni", "Qwen2_5OmniThinkerForConditionalGeneration", False),
    "qwen2_5_omni": ("qwen2_5_omni", "Qwen2_5OmniForConditionalGeneration", True),
    "qwen3_omni_moe_thinker": ("qwen3_omni_moe", "Qwen3OmniMoeThinkerForConditionalGeneration", False),
    "qwen3_omni_moe": ("qwen3_omni_moe", "Qwen3OmniMoeForConditionalGeneration", True),
}


@dataclass
class LoadedCheckpoint:
    thinker: nn.Module
    processor: object
    family: str
    directory: Path


def checkpoint_model_type(directory: str | Path) -> str:
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} is not a model directory: no config.json")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"{config_path}: model_type {model_type!r} is not a Qwen-Omni model; "
                         f"expected one of {sorted(_MODEL_TYPES)}")
    return model_type


def load_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32) -> LoadedCheckpoint:
    """Loads the thinker (eval mode) and the processor saved in `directory`."""
    import transformers

    directory = Path(directory)
    family, class_name, full_model = _MODEL_TYPES[checkpoint_model_type(directory)]
    model_class = getattr(transformers, class_name)
    extra = {"enable_audio_output": False} if full_model else {}
    model = model_class.from_pretrained(directory, dtype=dtype, **extra)
    thinker = model.thinker if full_model else model
    return LoadedCheckpoint(thinker=thinker.eval(), processor=load_processor(directory, family), family=family,
                            directory=directory)
