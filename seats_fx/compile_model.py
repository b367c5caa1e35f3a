"""seats_fx.compile: the one call that prunes both forward() and generate() of an omni model."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torch import nn

from seats_fx.backend import SeatsBackend
from seats_fx.config import SeatsConfig
from seats_fx.encoder_attention import use_fast_encoders, uses_fast_encoders
from seats_fx.float_constants import with_float_constants
from seats_fx.models import adapter_for, model_facts
from seats_fx.placeholder_mask import use_eager_placeholder_mask
from seats_fx.qwen3_rope_index import use_fast_qwen3_rope_index
from seats_fx.rope_index import use_fast_rope_index

log = logging.getLogger("seats_fx")

# generate() runs these on the thinker's base model before the prefill, outside the compiled forward()
# (transformers' mm_encoder_outputs); stage 1 needs their last attention, so they are compiled too
EAGER_ENCODER_METHODS = ("get_image_features", "get_video_features")
_ORIGINAL = "_seats_original_method"  # on an encoder method compile_with_backend compiled: what it compiled


def compile_model(model: nn.Module, options: Mapping[str, Any] | SeatsConfig | None = None,
                  **compile_kwargs) -> nn.Module:
    """Compiles the thinker of `model` (a thinker, or a full model holding one) with one seats backend,
    in place, and returns `model`.

    Unlike `model.compile(backend="seats")`, this also covers generate(): its prefill and decode steps go
    through the compiled thinker forward, and the image/video encoders generate() calls eagerly are
    compiled with the same backend so stage 1 sees their attention. compile_kwargs go to torch.compile;
    dynamic defaults to True (prompt lengths vary, and MoE decoders cannot be rewritten from a static trace).
    With SeatsConfig.fast_encoders (the default), or towers already switched by use_fast_encoders, the
    vision and audio towers attend with one variable-length call per layer and record stage 1's q/k.
    Qwen2.5-Omni's TMRoPE chunk split and Qwen3-Omni's audio-in-video interleave run without their per-token
    host loops (use_fast_rope_index, use_fast_qwen3_rope_index: the same positions), and get_placeholder_mask
    outside Dynamo (use_eager_placeholder_mask: a new clip length compiles nothing).
    """
    adapter = adapter_for(model)  # ValueError naming the supported families
    seats = SeatsBackend(options, facts=model_facts(adapter.thinker))
    compile_with_backend(model, seats, seats.config, **compile_kwargs)
    adapter.thinker.seats_backend = seats
    return model


def compile_with_backend(model: nn.Module, backend: Callable, config: SeatsConfig, **compile_kwargs) -> nn.Module:
    """What compile_model does with its SeatsBackend, for any Dynamo backend that rewrites graphs as one with
    `config` would (compiler research: a backend wrapping or switching between SeatsBackends). `config`
    decides what is prepared around the compile: nothing when it keeps every token, else the fast encoders
    (where config.fast_encoders) and the encoders generate() calls eagerly."""
    compile_kwargs.setdefault("dynamic", True)
    adapter = adapter_for(model)
    thinker = adapter.thinker
    adapter.prepare_for_compile()
    if config.keeps_everything:  # nothing is selected: the model, compiled, and nothing else changed
        thinker.compile(backend=backend, **compile_kwargs)
        return model
    if config.fast_encoders or uses_fast_encoders(model):
        # one attention call per encoder layer; the last layer of each tower records stage 1's q/k itself
        use_fast_encoders(model, stage1_taps=True)
    if adapter.family == "qwen2_5_omni":
        # transformers' get_rope_index reads every video and audio position on the host, one at a time (190 ms
        # of a 320 ms pruned prefill on an H200, the GPU idle); the same split from a few numpy operations
        use_fast_rope_index(model)
    elif adapter.family == "qwen3_omni_moe":
        # the same positions, without transformers' column-at-a-time interleave of a video with its audio
        use_fast_qwen3_rope_index(model)
    # its check's message specializes the video length: each new clip length recompiled it
    use_eager_placeholder_mask(model)
    _compile_thinker(thinker, backend, compile_kwargs)
    base = adapter.multimodal
    for name in EAGER_ENCODER_METHODS:
        method = getattr(base, name, None)
        if method is not None:
            # a model compiled before holds the compiled method: compile its original (a compiled callable
            # cannot be compiled again), so a second compile with other options replaces the first
            method = getattr(method, _ORIGINAL, method)
            compiled = with_float_constants(torch.compile(method, backend=backend, **compile_kwargs))
            setattr(compiled, _ORIGINAL, method)
            setattr(base, name, compiled)
    return model


def _compile_thinker(thinker: nn.Module, backend: Callable, compile_kwargs: dict) -> None:
    """nn.Module.compile, with its compiled call traced with float attributes as constants (float_constants).
    nn.Module.compile keeps the compiled call in _compiled_call_impl; a torch without it is compiled as is."""
    thinker.compile(backend=backend, **compile_kwargs)
    compiled = getattr(thinker, "_compiled_call_impl", None)
    if compiled is None:
        log.info("seats: nn.Module.compile kept no _compiled_call_impl in torch %s: float attributes stay "
                 "graph inputs", torch.__version__)
        return
    thinker._compiled_call_impl = with_float_constants(compiled)
