"""What every omni thinker adapter shares: the encoded-prompt record, input capture, and the decoder
calls that are the same in both families (the thinker's language model is driven the same way)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask

from seats_fx.models.layout import TokenLayout, build_token_layout
from seats_fx.ops.relevance import encoder_attention_received

# forward() inputs both thinkers take (and encode() accepts)
FORWARD_INPUTS = {
    "input_ids", "attention_mask", "input_features", "feature_attention_mask", "pixel_values",
    "pixel_values_videos", "image_grid_thw", "video_grid_thw", "use_audio_in_video", "video_second_per_grid",
}


@dataclass
class EncodedPrompt:
    """What the decoder receives, plus the per-token facts SEATS selects with.

    inputs_embeds: (B, L, D); position_ids: (3, B, L) TMRoPE positions; rope_deltas: (B, 1);
    attention_mask: (B, L) 1 = real token; layout: modality / window per token;
    token_weights: (B, L) attention each media token received in the last layer of its encoder (0 for text);
    layer_additions[l]: (B, L, D) added to decoder layer l's output (Qwen3-Omni's deepstack; [] if none).
    """

    inputs_embeds: torch.Tensor
    position_ids: torch.Tensor
    rope_deltas: torch.Tensor
    attention_mask: torch.Tensor
    layout: TokenLayout
    token_weights: torch.Tensor
    layer_additions: list[torch.Tensor] = field(default_factory=list)


class CapturedInputs:
    """Records the (args, kwargs) one module is called with, via a standard forward pre-hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls.append((args, dict(kwargs)))


@contextmanager
def capture_inputs(module: nn.Module) -> Iterator[CapturedInputs]:
    captured = CapturedInputs()
    handle = module.register_forward_pre_hook(captured, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def concatenated(features) -> torch.Tensor:
    """Returns encoder features as one tensor: later 5.x return a list per image/video, 5.17 one tensor."""
    return features if isinstance(features, torch.Tensor) else torch.cat(list(features), dim=0)


def find_module(root: nn.Module, kind: type) -> nn.Module | None:
    """Returns the first submodule of `root` (itself included) that is an instance of `kind`, or None."""
    return next((module for module in root.modules() if isinstance(module, kind)), None)


class ThinkerAdapter:
    """The instance side both families share; a family sets `thinker_class` and its graph facts, and
    implements encode(), its encoders' token weights and text_query_parts().

    Graph facts a family declares (class attributes, read by passes.locate through passes.dynamo_meta; no
    instance needed) and how each is used:
    - `modeling_module`: the transformers module defining the family's classes. A graph holding a module of
      one of its classes (in `nn_module_stack`, or as the frame Dynamo compiles) belongs to a supported model.
    - `decoder_layer_class`: nodes inside a module of this class are that layer's; one layer per module
      instance, in the order they run. A frame whose module is of this class is a decoder broken into pieces.
    - `rotary_class`: the values layers read that this module computed are cos/sin; its (3, B, L) integer
      input is the TMRoPE position ids.
    - `text_model_class`, `vision_encoder_class`, `audio_encoder_class`: the parts of an instance (found by
      type) and, for the vision encoder, the frame whose local `vision_window_index_local` is the tower's
      window permutation.
    - `audio_attention_class`, `vision_attention_class`: a graph compiled from such a module's frame that calls
      SDPA is an encoder attention over cu_seqlens chunks (stage-1 weights come from its last call).
    - `vision_patch_embed_class`: for towers without a window permutation, its frame marks a vision run.
    Model facts come from the instance (`seats_fx.models.facts.model_facts`): placeholder token ids per
    modality from the config (`image_token_id`, `video_token_id`, `audio_token_id`: the value compared with the
    token ids names the modality), `position_id_per_seconds` (windows), the decoder depth (layers of the text
    model), and the output embedding's weight (the lm_head, matched by identity). No rule reads source text.

    Parts of the thinker are found by module type, never by attribute path: transformers 5.17 keeps the
    language model, towers and multimodal helpers on the thinker itself, later 5.x on `thinker.model`.
    """

    thinker_class: type = nn.Module
    text_model_class: type = nn.Module
    vision_encoder_class: type = nn.Module
    audio_encoder_class: type = nn.Module

    def __init__(self, thinker: nn.Module) -> None:
        if not isinstance(thinker, self.thinker_class):
            raise TypeError(f"expected a {self.thinker_class.__name__}, got {type(thinker).__name__}")
        self.thinker = thinker
        self.config = thinker.config
        for name in ("vision_start_token_id", "audio_start_token_id"):
            if getattr(self.config, name, None) is None:
                raise ValueError(f"thinker config lacks {name} (real checkpoints carry it; set it on tiny configs)")

    @classmethod
    def thinker_of(cls, model: nn.Module) -> nn.Module | None:
        """Returns the thinker inside `model` (itself, or the `.thinker` of the full model), or None."""
        if isinstance(model, cls.thinker_class):
            return model
        thinker = getattr(model, "thinker", None)
        return thinker if isinstance(thinker, cls.thinker_class) else None

    def prepare_for_compile(self) -> None:
        """Makes the model traceable as seats needs it (run by seats_fx.compile); nothing by default."""

    # ---- parts of the thinker, by type -------------------------------------------------------------
    @property
    def language_model(self) -> nn.Module:
        return find_module(self.thinker, self.text_model_class)

    @property
    def visual(self) -> nn.Module:
        return find_module(self.thinker, self.vision_encoder_class)

    @property
    def audio_tower(self) -> nn.Module:
        return find_module(self.thinker, self.audio_encoder_class)

    @property
    def multimodal(self) -> nn.Module:
        """Returns the module holding get_placeholder_mask / get_rope_index / get_*_features (the thinker's
        base model in later 5.x releases, the thinker itself in 5.17)."""
        base = getattr(self.thinker, "model", None)
        return base if hasattr(base, "get_placeholder_mask") else self.thinker

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def depth(self) -> int:
        return len(self.decoder_layers)

    def positions_per_window(self, window_seconds: float) -> int:
        """Returns how many TMRoPE temporal positions one window spans."""
        return int(self.config.position_id_per_seconds * window_seconds)

    @property
    def modality_token_ids(self) -> dict[str, tuple[int, ...]]:
        """Returns the placeholder token ids of each modality."""
        return {"image": (self.config.image_token_id,), "video": (self.config.video_token_id,),
                "audio": (self.config.audio_token_id,)}

    # ---- before the decoder ------------------------------------------------------------------------
    @staticmethod
    def check_inputs(inputs: dict) -> None:
        unknown = set(inputs) - FORWARD_INPUTS
        if unknown:
            raise ValueError(f"unsupported inputs {sorted(unknown)}; expected a subset of {sorted(FORWARD_INPUTS)}")

    def embed_text_and_audio(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (input_ids, attention_mask, inputs_embeds with the audio merged, stage-1 weights (B, L)
        with the audio tokens' filled in), running the model's own audio tower and merge."""
        self.check_inputs(inputs)
        model = self.multimodal
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self.thinker.get_input_embeddings()(input_ids)
        weights = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        features, feature_mask = inputs.get("input_features"), inputs.get("feature_attention_mask")
        if features is not None:
            attention = self.audio_tower.layers[-1].self_attn
            with capture_inputs(attention) as seen:
                audio = model.get_audio_features(features, feature_mask, return_dict=True).last_hidden_state
            _, _, audio_mask = model.get_placeholder_mask(input_ids, inputs_embeds=embeds)
            embeds = embeds.masked_scatter(audio_mask, audio.to(embeds.dtype))
            lengths = feature_mask.sum(-1) if feature_mask is not None else None
            weights[audio_mask[..., 0]] = self.audio_token_weights(_received_in(attention, seen), lengths)
        return input_ids, attention_mask, embeds, weights

    def positions_and_layout(self, inputs: dict, attention_mask: torch.Tensor, window_seconds: float):
        """Returns (position_ids, rope_deltas, layout) from the model's own get_rope_index."""
        feature_mask = inputs.get("feature_attention_mask")
        position_ids, rope_deltas = self.multimodal.get_rope_index(
            inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), attention_mask,
            bool(inputs.get("use_audio_in_video", False)),
            feature_mask.sum(-1) if feature_mask is not None else None, inputs.get("video_second_per_grid"))
        layout = build_token_layout(inputs["input_ids"], position_ids[0], attention_mask,
                                    (self.config.video_token_id,), (self.config.audio_token_id,),
                                    (self.config.image_token_id,), self.positions_per_window(window_seconds))
        return position_ids, rope_deltas, layout

    # ---- inside the decoder ------------------------------------------------------------------------
    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (cos, sin), each (B, L, head_dim), for 3-D position ids."""
        return self.language_model.rotary_emb(hidden, position_ids)

    def causal_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        """Returns the decoder's causal mask for a (possibly pruned) sequence in original order."""
        return create_causal_mask(config=self.language_model.config, inputs_embeds=hidden,
                                  attention_mask=attention_mask, past_key_values=None, position_ids=None)

    def run_layer(self, index: int, hidden: torch.Tensor, mask, cos: torch.Tensor, sin: torch.Tensor,
                  cache=None) -> torch.Tensor:
        """Returns the output of decoder layer `index` (0-based), called as the text model calls it; with a
        transformers Cache, the layer appends its keys/values to it (additions after a layer, such as
        deepstack, are the caller's: EncodedPrompt.layer_additions)."""
        return self.decoder_layers[index](hidden, attention_mask=mask, position_embeddings=(cos, sin),
                                          position_ids=None, past_key_values=cache, use_cache=cache is not None)

    def new_cache(self):
        """Returns an empty KV cache of the kind generate() uses."""
        return DynamicCache(config=self.language_model.config)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Returns the token embeddings of text ids (B, L) -> (B, L, D)."""
        return self.thinker.get_input_embeddings()(input_ids)

    def text_query_parts(self, index: int, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Returns (q of the query rows (B, H, Q, hd), k of all tokens (B, Hkv, L, hd), scaling) of decoder
        layer `index` on its input `hidden`, per-head q/k norms (where the family has them) and multimodal
        rotary applied; query_rows: (B, Q) positions."""
        layer = self.decoder_layers[index]
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        batch, length, _ = normed.shape
        rows = query_rows.shape[1]
        take = lambda t: t.gather(1, query_rows[:, :, None].expand(batch, rows, t.shape[-1]))
        q_norm, k_norm = getattr(attn, "q_norm", nn.Identity()), getattr(attn, "k_norm", nn.Identity())
        q = q_norm(attn.q_proj(take(normed)).view(batch, rows, -1, attn.head_dim)).transpose(1, 2)
        k = k_norm(attn.k_proj(normed).view(batch, length, -1, attn.head_dim)).transpose(1, 2)
        q = q * take(cos).unsqueeze(1) + _rotate_half(q) * take(sin).unsqueeze(1)
        k = k * cos.unsqueeze(1) + _rotate_half(k) * sin.unsqueeze(1)
        return q, k, attn.scaling

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Returns lm_head(norm(hidden))."""
        return self.thinker.get_output_embeddings()(self.language_model.norm(hidden))


def _received_in(attention: nn.Module, seen: CapturedInputs) -> torch.Tensor:
    """Returns the attention each frame received in the audio tower's last layer (both families' audio
    attention: q_proj/k_proj over packed frames, segments given by cu_seqlens)."""
    args, kwargs = seen.calls[-1]
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    n = hidden.shape[0]
    q = attention.q_proj(hidden).reshape(n, attention.num_heads, -1)
    k = attention.k_proj(hidden).reshape(n, attention.num_heads, -1)
    return encoder_attention_received(q, k, kwargs["cu_seqlens"], attention.scaling)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    # the rotary convention of both families' decoders: (x1, x2) -> (-x2, x1) over halves of the head dim
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
