"""seats_fx.compile: the one call that prunes both forward() and generate() of an omni model."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from seats_fx.backend import SeatsBackend
from seats_fx.config import SeatsConfig
from seats_fx.models import adapter_for

# generate() runs these on the thinker's base model before the prefill, outside the compiled forward()
# (transformers' mm_encoder_outputs); stage 1 needs their last attention, so they are compiled too
EAGER_ENCODER_METHODS = ("get_image_features", "get_video_features")


def compile_model(model: nn.Module, options: Mapping[str, Any] | SeatsConfig | None = None,
                  **compile_kwargs) -> nn.Module:
    """Compiles the thinker of `model` (a thinker, or a full model holding one) with one seats backend,
    in place, and returns `model`.

    Unlike `model.compile(backend="seats")`, this also covers generate(): its prefill and decode steps go
    through the compiled thinker forward, and the image/video encoders generate() calls eagerly are
    compiled with the same backend so stage 1 sees their attention. compile_kwargs go to torch.compile;
    dynamic defaults to True (prompt lengths vary, and MoE decoders cannot be rewritten from a static trace).
    """
    compile_kwargs.setdefault("dynamic", True)
    adapter = adapter_for(model)  # ValueError naming the supported families
    thinker = adapter.thinker
    adapter.prepare_for_compile()
    seats = SeatsBackend(options, positions_per_second=int(thinker.config.position_id_per_seconds),
                         model_is_supported=True)
    thinker.compile(backend=seats, **compile_kwargs)
    base = thinker.model
    for name in EAGER_ENCODER_METHODS:
        method = getattr(base, name, None)
        if method is not None:
            setattr(base, name, torch.compile(method, backend=seats, **compile_kwargs))
    thinker.seats_backend = seats
    return model
