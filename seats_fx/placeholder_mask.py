"""transformers' `get_placeholder_mask` outside Dynamo, so a new clip length compiles nothing.

The function compares the input ids with the placeholder ids and checks the count against the features.
The check's message is an f-string holding `video_features.shape[0]`, evaluated even when the check passes,
so under torch.compile it specializes that size: every new video length recompiled the frame (a Dynamo trace
and an Inductor compile, while the user waits for the first token), the only graph a new clip length still
cost `seats_fx.compile`. Eagerly it is a few comparisons and the count check's read, which the compiled frame
made too (formatting the token count reads it). Nothing seats needs is lost: the token ids of the prompt are
taken where the compiled forward embeds them (seats_fx.backend's embedding tap, with the model's placeholder
ids), not from the mask.
"""

from __future__ import annotations

import torch
from torch import nn

from seats_fx.instance_methods import override_methods

_NAME = "get_placeholder_mask"


def use_eager_placeholder_mask(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Runs `get_placeholder_mask` of every module of `model` that has one (a Qwen-Omni thinker, its base
    model) outside Dynamo, in place, and returns `model`; enabled=False traces it again. The masks are
    unchanged: the same function runs, eagerly."""
    def overrides_for(module: nn.Module) -> dict:
        function = getattr(type(module), _NAME, None)
        return {_NAME: torch.compiler.disable(function)} if callable(function) else {}

    if not override_methods(model, overrides_for, enabled):
        raise ValueError(f"expected a model with {_NAME} (a Qwen-Omni thinker or full model), "
                         f"got {type(model).__name__}")
    return model
