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


@pytest.fixture(autouse=True)
def _fresh_seats_state():
    """Each test starts without stats of an earlier call; Dynamo may hold many compiled variants."""
    import torch._dynamo

    from seats_fx.runtime import set_last_stats

    # many option sets compile the same code objects; past these limits Dynamo reuses any cached graph,
    # whichever backend built it (RUN_ONLY), and results would cross between option sets
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 100_000
    set_last_stats(None)
    yield


@pytest.fixture(scope="session")
def tiny_qwen3():
    """A tiny random-weight Qwen3-Omni MoE thinker (8 layers, deepstack and experts kept) in eval mode."""
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    from seats_fx.models.configs import tiny_qwen3_omni_moe_config

    torch.manual_seed(0)
    return Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_omni_moe_config()).eval()
