"""Shared fixtures: hypothesis profiles and small random-weight thinkers."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_thinker():
    """A tiny random-weight Qwen2.5-Omni thinker (8 layers) in eval mode."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from seats_fx.models.configs import tiny_qwen2_5_omni_config

    torch.manual_seed(0)
    return Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config()).eval()
