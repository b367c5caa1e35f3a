"""What a model instance says about itself that the graph passes need: family, placeholder token ids,
TMRoPE rate, depth and lm_head weight, read from its config and its modules (found by type)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

from torch import nn

from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter
from seats_fx.models.qwen3_omni_moe import Qwen3OmniMoeAdapter
from seats_fx.models.thinker import find_module

ADAPTERS = (Qwen2_5OmniAdapter, Qwen3OmniMoeAdapter)
MODALITY_TOKEN_ATTRIBUTES = {"image": "image_token_id", "video": "video_token_id", "audio": "audio_token_id"}


def adapter_of_type(kind: type | None):
    """Returns the adapter of the family whose modeling module defines `kind`, or None."""
    module = getattr(kind, "__module__", None)
    return next((adapter for adapter in ADAPTERS if adapter.modeling_module == module), None)


@dataclass(frozen=True)
class ModelFacts:
    """Facts of one omni thinker. token_ids: placeholder token ids per modality ("image", "video", "audio");
    positions_per_second: the config's TMRoPE rate (None when the module seen holds no thinker config);
    depth: decoder layers; output_weight: returns the lm_head weight while the model lives (or None)."""

    adapter: type
    token_ids: dict[str, tuple[int, ...]]
    positions_per_second: int | None
    depth: int | None
    output_weight: Callable[[], object] = lambda: None


def model_facts(module: nn.Module | None) -> ModelFacts | None:
    """Returns the facts a module of a supported family exposes (a thinker, its base model, the full model),
    or None for other modules (a tower, a layer, a foreign model)."""
    if module is None:
        return None
    thinker = getattr(module, "thinker", None)
    if thinker is not None and adapter_of_type(type(thinker)) is not None:
        module = thinker
    adapter = adapter_of_type(type(module))
    config = getattr(module, "config", None)
    if adapter is None or config is None or getattr(config, "video_token_id", None) is None:
        return None
    token_ids = {name: (int(getattr(config, attribute)),) for name, attribute in MODALITY_TOKEN_ATTRIBUTES.items()
                 if getattr(config, attribute, None) is not None}
    per_second = getattr(config, "position_id_per_seconds", None)
    text_model = find_module(module, adapter.text_model_class)
    depth = len(text_model.layers) if text_model is not None else None
    output = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    weight = getattr(output, "weight", None)
    return ModelFacts(adapter, token_ids, int(per_second) if per_second is not None else None, depth,
                      weakref.ref(weight) if weight is not None else (lambda: None))


def decoder_layer_position(layer: nn.Module) -> tuple[int, int] | None:
    """Returns (0-based index, decoder depth) of a decoder layer module: the `layer_idx` its attention keeps
    for the KV cache and the layer count of that module's config; None when the layer holds no such module."""
    for module in layer.modules():
        index = getattr(module, "layer_idx", None)
        depth = getattr(getattr(module, "config", None), "num_hidden_layers", None)
        if isinstance(index, int) and isinstance(depth, int) and 0 <= index < depth:
            return index, depth
    return None
