"""Qwen2.5-Omni thinker: everything seats_fx needs to know about this model family, and nothing else."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf
from transformers.vision_utils import get_vision_window_index

from seats_fx.models.layout import TokenLayout, build_token_layout
from seats_fx.ops.relevance import encoder_attention_received

# Authors' defaults for the 28-layer 7B model (drops after layers 16, 18, 20; text only from layer 24),
# kept as depth fractions so other depths (3B: 36 layers) scale with them.
DROP_LAYER_FRACTIONS = (16 / 28, 18 / 28, 20 / 28)
LATE_BLOCK_FRACTION = 24 / 28


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


class _CapturedInputs:
    """Records the (args, kwargs) one module is called with, via a standard forward pre-hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls.append((args, dict(kwargs)))


@contextmanager
def _capture(module: nn.Module) -> Iterator[_CapturedInputs]:
    captured = _CapturedInputs()
    handle = module.register_forward_pre_hook(captured, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


class Qwen2_5OmniAdapter:
    """Model-family facts of `Qwen2_5OmniThinkerForConditionalGeneration` (transformers 5.x)."""

    family = "qwen2_5_omni"
    drop_layer_fractions = DROP_LAYER_FRACTIONS
    late_block_fraction = LATE_BLOCK_FRACTION
    # ---- how the family shows up in Dynamo graphs (read by passes.locate; no instance needed) ----
    decoder_layer_class = "Qwen2_5OmniDecoderLayer"
    rotary_path_suffix = "language_model.rotary_emb"
    final_norm_path_suffix = "language_model.norm"
    # get_placeholder_mask: `special_video_mask = input_ids == self.config.video_token_id`
    modality_compare_pattern = r"input_ids == self\.config\.(image|video|audio)_token_id"
    # TMRoPE temporal positions per second (config.position_id_per_seconds of every released checkpoint)
    position_id_per_seconds = 25
    # encoder graphs (stage-1 weights): inputs named by Dynamo sources, and the attention graphs over
    # cu_seqlens chunks, told apart by their output projection's name
    audio_lengths_source = "L['feature_attention_mask']"
    attention_mask_source = "L['attention_mask']"
    vision_window_index_source = "L['window_index']"
    audio_attention_projection = "_modules['out_proj']"
    vision_attention_projection = "_modules['proj']"
    spatial_merge_unit = 4  # 2x2 patches per LLM video token (spatial_merge_size 2 in every release)
    static_traces_supported = True  # the layers spell the length only in view/reshape/expand
    vision_patch_embed_weight_source = None  # runs start at the window permutation instead
    # parameters a decoder layer compiled as its own frame reads
    decoder_layer_frame_sources = ("L['self']._modules['self_attn']._modules['q_proj']",
                                   "L['self']._modules['mlp']._modules['gate_proj']",
                                   "L['self']._modules['post_attention_layernorm']")

    @staticmethod
    def audio_token_weights(frame_weights: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Returns per-LLM-token weights from per-frame ones: mean of the 2 frames each token pools."""
        return _pool_pairs(frame_weights, mel_lengths)

    @staticmethod
    def vision_token_weights(patch_weights: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor:
        """Returns per-LLM-token weights from per-patch ones given in window-permuted order."""
        merged = patch_weights.view(-1, Qwen2_5OmniAdapter.spatial_merge_unit).mean(dim=1)
        return merged[torch.argsort(window_index)]

    def __init__(self, thinker: nn.Module) -> None:
        if not isinstance(thinker, hf.Qwen2_5OmniThinkerForConditionalGeneration):
            raise TypeError(f"expected a Qwen2_5OmniThinkerForConditionalGeneration, got {type(thinker).__name__}")
        self.thinker = thinker
        self.config = thinker.config
        for name in ("vision_start_token_id", "audio_start_token_id"):
            if getattr(self.config, name, None) is None:
                raise ValueError(f"thinker config lacks {name} (real checkpoints carry it; set it on tiny configs)")

    @staticmethod
    def thinker_of(model: nn.Module) -> nn.Module | None:
        """Returns the thinker inside `model` (itself, or the `.thinker` of the full model), or None."""
        if isinstance(model, hf.Qwen2_5OmniThinkerForConditionalGeneration):
            return model
        thinker = getattr(model, "thinker", None)
        if isinstance(thinker, hf.Qwen2_5OmniThinkerForConditionalGeneration):
            return thinker
        return None

    def prepare_for_compile(self) -> None:
        """Nothing to prepare: the decoder traces into one graph as it is."""

    # ---- decoder structure -------------------------------------------------------------------------
    @property
    def language_model(self) -> nn.Module:
        return self.thinker.model.language_model

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
    @torch.no_grad()
    def encode(self, inputs: dict, window_seconds: float) -> EncodedPrompt:
        """Returns the decoder input of a forward() call plus layout and stage-1 weights.

        Runs the model's own encoders, merge and get_rope_index (as Qwen2_5OmniThinkerModel.forward does),
        recording the last encoder layers' attention inputs with forward pre-hooks to score tokens.
        """
        unknown = set(inputs) - _FORWARD_INPUTS
        if unknown:
            raise ValueError(f"unsupported inputs {sorted(unknown)}; expected a subset of {sorted(_FORWARD_INPUTS)}")
        model = self.thinker.model
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = model.get_input_embeddings()(input_ids)
        weights = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)

        features, feature_mask = inputs.get("input_features"), inputs.get("feature_attention_mask")
        if features is not None:
            with _capture(model.audio_tower.layers[-1].self_attn) as seen:
                audio = model.get_audio_features(features, feature_mask, return_dict=True).last_hidden_state
            _, _, audio_mask = model.get_placeholder_mask(input_ids, inputs_embeds=embeds)
            embeds = embeds.masked_scatter(audio_mask, audio.to(embeds.dtype))
            lengths = feature_mask.sum(-1) if feature_mask is not None else None
            weights[audio_mask[..., 0]] = self._audio_token_weights(seen, lengths)

        for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                           ("video", "pixel_values_videos", "video_grid_thw")):
            pixels = inputs.get(pixels_key)
            if pixels is None:
                continue
            grid = inputs[grid_key]
            with _capture(model.visual.blocks[-1].attn) as seen:
                getter = model.get_image_features if kind == "image" else model.get_video_features
                pooled = torch.cat(getter(pixels, grid, return_dict=True).pooler_output, dim=0)
            image_mask, video_mask, _ = model.get_placeholder_mask(input_ids, inputs_embeds=embeds)
            mask = image_mask if kind == "image" else video_mask
            embeds = embeds.masked_scatter(mask, pooled.to(embeds.dtype))
            weights[mask[..., 0]] = self._vision_token_weights(seen, grid)

        position_ids, rope_deltas = model.get_rope_index(
            input_ids, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), attention_mask,
            bool(inputs.get("use_audio_in_video", False)),
            feature_mask.sum(-1) if feature_mask is not None else None, inputs.get("video_second_per_grid"))
        layout = build_token_layout(input_ids, position_ids[0], attention_mask, (self.config.video_token_id,),
                                    (self.config.audio_token_id,), (self.config.image_token_id,),
                                    self.positions_per_window(window_seconds))
        return EncodedPrompt(embeds, position_ids, rope_deltas, attention_mask, layout, weights)

    def _vision_token_weights(self, seen: _CapturedInputs, grid_thw: torch.Tensor) -> torch.Tensor:
        """Returns attention received per merged vision token, in the order the LLM sees the tokens."""
        attn = self.thinker.model.visual.blocks[-1].attn
        (hidden,), kwargs = seen.calls[-1]
        n = hidden.shape[0]
        q = attn.q(hidden).reshape(n, attn.num_heads, -1)
        k = attn.k(hidden).reshape(n, attn.num_heads, -1)
        cos, sin = kwargs["position_embeddings"]
        q, k = hf.apply_rotary_pos_emb_vision(q, k, cos, sin)
        received = encoder_attention_received(q, k, kwargs["cu_seqlens"], attn.scaling)
        visual = self.thinker.model.visual
        window_index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size,
                                                  visual.patch_size)
        return self.vision_token_weights(received, window_index)

    def _audio_token_weights(self, seen: _CapturedInputs, feature_lens: torch.Tensor) -> torch.Tensor:
        """Returns attention received per audio LLM token (mean over the 2 pooled encoder frames)."""
        attn = self.thinker.model.audio_tower.layers[-1].self_attn
        _, kwargs = seen.calls[-1]
        hidden = kwargs["hidden_states"]
        n = hidden.shape[0]
        q = attn.q_proj(hidden).reshape(n, attn.num_heads, -1)
        k = attn.k_proj(hidden).reshape(n, attn.num_heads, -1)
        received = encoder_attention_received(q, k, kwargs["cu_seqlens"], attn.scaling)
        return self.audio_token_weights(received, feature_lens)

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
        transformers Cache, the layer appends its keys/values to it."""
        return self.decoder_layers[index](hidden, attention_mask=mask, position_embeddings=(cos, sin),
                                          position_ids=None, past_key_values=cache, use_cache=cache is not None)

    def new_cache(self):
        """Returns an empty KV cache of the kind generate() uses."""
        return DynamicCache(config=self.language_model.config)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Returns the token embeddings of text ids (B, L) -> (B, L, D)."""
        return self.thinker.model.get_input_embeddings()(input_ids)

    def text_query_parts(self, index: int, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Returns (q of the query rows (B, H, Q, hd), k of all tokens (B, Hkv, L, hd), scaling) of decoder
        layer `index` on its input `hidden`, with multimodal rotary applied; query_rows: (B, Q) positions."""
        layer = self.decoder_layers[index]
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        batch, length, _ = normed.shape
        rows = query_rows.shape[1]
        take = lambda t: t.gather(1, query_rows[:, :, None].expand(batch, rows, t.shape[-1]))
        q = attn.q_proj(take(normed)).view(batch, rows, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        q = q * take(cos).unsqueeze(1) + hf.rotate_half(q) * take(sin).unsqueeze(1)
        k = k * cos.unsqueeze(1) + hf.rotate_half(k) * sin.unsqueeze(1)
        return q, k, attn.scaling

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Returns lm_head(norm(hidden))."""
        return self.thinker.lm_head(self.language_model.norm(hidden))


def _pool_pairs(frame_weights: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the frame pairs the audio tower's stride-2 average pooling merges (get_pool_indices)."""
    pool = hf.get_pool_indices(mel_lengths)
    return (frame_weights[pool] + frame_weights[pool + 1]) / 2


_FORWARD_INPUTS = {
    "input_ids", "attention_mask", "input_features", "feature_attention_mask", "pixel_values",
    "pixel_values_videos", "image_grid_thw", "video_grid_thw", "use_audio_in_video", "video_second_per_grid",
}
