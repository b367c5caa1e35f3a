"""Model-family adapters. Adding a family means adding one adapter module and listing it here."""

from __future__ import annotations

from torch import nn

from seats_fx.models.facts import ADAPTERS, ModelFacts, adapter_of_type, decoder_layer_position, model_facts
from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter
from seats_fx.models.qwen3_omni_moe import Qwen3OmniMoeAdapter
from seats_fx.models.thinker import EncodedPrompt, ThinkerAdapter


def adapter_for(model: nn.Module):
    """Returns the adapter of the first family whose thinker is found in `model`; ValueError if none."""
    for adapter in ADAPTERS:
        thinker = adapter.thinker_of(model)
        if thinker is not None:
            return adapter(thinker)
    raise ValueError(f"seats_fx does not know {type(model).__name__}; supported families: "
                     f"{[a.family for a in ADAPTERS]}")


__all__ = ["ADAPTERS", "EncodedPrompt", "ModelFacts", "ThinkerAdapter", "Qwen2_5OmniAdapter", "Qwen3OmniMoeAdapter",
           "adapter_for", "adapter_of_type", "decoder_layer_position", "model_facts"]
