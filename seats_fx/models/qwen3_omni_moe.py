"""Qwen3-Omni MoE thinker: everything seats_fx needs to know about this model family, and nothing else.

Differences from Qwen2.5-Omni that matter here: audio and video tokens of a clip are merged by time
(not in 2 s chunks), the audio tower's attention runs on the LLM audio tokens themselves (no pooling
after it), the vision tower has no window permutation, attention normalises q and k per head, the MLP is
a mixture of experts, and "deepstack" adds vision features to the outputs of the first decoder layers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf

from seats_fx.models.layout import build_token_layout
from seats_fx.models.qwen2_5_omni import EncodedPrompt, _capture
from seats_fx.ops.relevance import encoder_attention_received

# the authors' 7B defaults as depth fractions (the paper gives no Qwen3-Omni layers; same fractions)
DROP_LAYER_FRACTIONS = (16 / 28, 18 / 28, 20 / 28)
LATE_BLOCK_FRACTION = 24 / 28


class Qwen3OmniMoeAdapter:
    """Model-family facts of `Qwen3OmniMoeThinkerForConditionalGeneration` (transformers 5.x)."""

    family = "qwen3_omni_moe"
    drop_layer_fractions = DROP_LAYER_FRACTIONS
    late_block_fraction = LATE_BLOCK_FRACTION
    # ---- how the family shows up in Dynamo graphs (read by passes.locate; no instance needed) ----
    decoder_layer_class = "Qwen3OmniMoeThinkerTextDecoderLayer"
    rotary_path_suffix = "language_model.rotary_emb"
    final_norm_path_suffix = "language_model.norm"
    modality_compare_pattern = r"input_ids == self\.config\.(image|video|audio)_token_id"
    # TMRoPE temporal positions per second of the tiny test configs (transformers' default); checked
    # against the config when an instance is adapted
    position_id_per_seconds = 25
    audio_lengths_source = "L['feature_attention_mask']"
    attention_mask_source = "L['attention_mask']"
    vision_window_index_source = None  # no window permutation in this vision tower: a run starts at
    vision_patch_embed_weight_source = "L['self']._modules['proj']._parameters['weight']"  # its Conv3d patch embedding
    audio_attention_projection = "_modules['out_proj']"
    vision_attention_projection = "_modules['proj']"
    spatial_merge_unit = 4  # 2x2 patches per LLM video token
    static_traces_supported = False  # see passes.locate: MoE sizes are length x top_k
    # parameters a decoder layer compiled as its own frame reads (q/k norms and experts: this family only)
    decoder_layer_frame_sources = ("L['self']._modules['self_attn']._modules['q_norm']",
                                   "L['self']._modules['mlp']._modules['experts']")

    @staticmethod
    def audio_token_weights(frame_weights: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """The audio tower attends over the LLM audio tokens themselves: weights map one to one."""
        return frame_weights

    @staticmethod
    def vision_token_weights(patch_weights: torch.Tensor, window_index: torch.Tensor | None = None) -> torch.Tensor:
        """Returns per-LLM-token weights: mean over each run of 4 patches the merger concatenates."""
        return patch_weights.view(-1, Qwen3OmniMoeAdapter.spatial_merge_unit).mean(dim=1)

    def __init__(self, thinker: nn.Module) -> None:
        if not isinstance(thinker, hf.Qwen3OmniMoeThinkerForConditionalGeneration):
            raise TypeError(f"expected a Qwen3OmniMoeThinkerForConditionalGeneration, got {type(thinker).__name__}")
        self.thinker = thinker
        self.config = thinker.config
        for name in ("vision_start_token_id", "audio_start_token_id"):
            if getattr(self.config, name, None) is None:
                raise ValueError(f"thinker config lacks {name} (real checkpoints carry it; set it on tiny configs)")

    @staticmethod
    def thinker_of(model: nn.Module) -> nn.Module | None:
        """Returns the thinker inside `model` (itself, or the `.thinker` of the full model), or None."""
        if isinstance(model, hf.Qwen3OmniMoeThinkerForConditionalGeneration):
            return model
        thinker = getattr(model, "thinker", None)
        return thinker if isinstance(thinker, hf.Qwen3OmniMoeThinkerForConditionalGeneration) else None

    def prepare_for_compile(self) -> None:
        """Makes deepstack traceable in one graph with the layers: transformers adds the vision features
        with boolean-mask indexing (`hidden[mask, :] += embeds`), a data-dependent shape on which Dynamo
        breaks the decoder into one graph per layer. The replacement adds the same values as one
        (B, L, D) per-token tensor (zero off the vision tokens), which the seats passes prune like cos/sin."""
        # a plain function as instance attribute (a bound method would make Dynamo name the language
        # model's submodules through it, and the final norm's path would no longer match)
        self.language_model._deepstack_process = _deepstack_as_addition

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
        return int(self.config.position_id_per_seconds * window_seconds)

    @property
    def modality_token_ids(self) -> dict[str, tuple[int, ...]]:
        return {"image": (self.config.image_token_id,), "video": (self.config.video_token_id,),
                "audio": (self.config.audio_token_id,)}

    # ---- before the decoder ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, inputs: dict, window_seconds: float) -> EncodedPrompt:
        """Returns the decoder input of a forward() call plus layout, stage-1 weights and the deepstack
        additions, running the model's own encoders, merge and get_rope_index as its forward does."""
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
            weights[audio_mask[..., 0]] = self._audio_token_weights(seen)

        # deepstack: per decoder layer, a (B, L, D) addition that is zero off the vision tokens
        additions: list[torch.Tensor] = []
        for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                           ("video", "pixel_values_videos", "video_grid_thw")):
            pixels = inputs.get(pixels_key)
            if pixels is None:
                continue
            getter = model.get_image_features if kind == "image" else model.get_video_features
            with _capture(model.visual.blocks[-1].attn) as seen:
                output = getter(pixels, inputs[grid_key], return_dict=True)
            image_mask, video_mask, _ = model.get_placeholder_mask(input_ids, inputs_embeds=embeds)
            mask = image_mask if kind == "image" else video_mask
            embeds = embeds.masked_scatter(mask, torch.cat(output.pooler_output).to(embeds.dtype))
            weights[mask[..., 0]] = self._vision_token_weights(seen)
            for i, per_layer in enumerate(output.deepstack_features):
                dense = torch.zeros_like(embeds).masked_scatter(mask, torch.cat(per_layer).to(embeds.dtype))
                if i < len(additions):
                    additions[i] = additions[i] + dense
                else:
                    additions.append(dense)

        position_ids, rope_deltas = model.get_rope_index(
            input_ids, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), attention_mask,
            bool(inputs.get("use_audio_in_video", False)),
            feature_mask.sum(-1) if feature_mask is not None else None, inputs.get("video_second_per_grid"))
        layout = build_token_layout(input_ids, position_ids[0], attention_mask, (self.config.video_token_id,),
                                    (self.config.audio_token_id,), (self.config.image_token_id,),
                                    self.positions_per_window(window_seconds))
        return EncodedPrompt(embeds, position_ids, rope_deltas, attention_mask, layout, weights, additions)

    def _vision_token_weights(self, seen) -> torch.Tensor:
        attn = self.thinker.model.visual.blocks[-1].attn
        args, kwargs = seen.calls[-1]
        hidden = args[0] if args else kwargs["hidden_states"]
        n = hidden.shape[0]
        q, k, _ = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = kwargs["position_embeddings"]
        q, k = hf.apply_rotary_pos_emb_vision(q, k, cos, sin)
        return self.vision_token_weights(encoder_attention_received(q, k, kwargs["cu_seqlens"], attn.scaling))

    def _audio_token_weights(self, seen) -> torch.Tensor:
        attn = self.thinker.model.audio_tower.layers[-1].self_attn
        args, kwargs = seen.calls[-1]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        n = hidden.shape[0]
        q = attn.q_proj(hidden).reshape(n, attn.num_heads, -1)
        k = attn.k_proj(hidden).reshape(n, attn.num_heads, -1)
        return encoder_attention_received(q, k, kwargs["cu_seqlens"], attn.scaling)

    # ---- inside the decoder ------------------------------------------------------------------------
    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.language_model.rotary_emb(hidden, position_ids)

    def causal_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        return create_causal_mask(config=self.language_model.config, inputs_embeds=hidden,
                                  attention_mask=attention_mask, past_key_values=None, position_ids=None)

    def run_layer(self, index: int, hidden: torch.Tensor, mask, cos: torch.Tensor, sin: torch.Tensor,
                  cache=None) -> torch.Tensor:
        """Returns the output of decoder layer `index` (0-based), called as the text model calls it
        (the deepstack addition after it is the caller's: EncodedPrompt.layer_additions)."""
        return self.decoder_layers[index](hidden, attention_mask=mask, position_embeddings=(cos, sin),
                                          position_ids=None, past_key_values=cache, use_cache=cache is not None)

    def new_cache(self):
        return DynamicCache(config=self.language_model.config)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.thinker.model.get_input_embeddings()(input_ids)

    def text_query_parts(self, index: int, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Returns (q of the query rows (B, H, Q, hd), k of all tokens (B, Hkv, L, hd), scaling) of decoder
        layer `index` on its input, per-head q/k norms and multimodal rotary applied."""
        layer = self.decoder_layers[index]
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        batch, length, _ = normed.shape
        rows = query_rows.shape[1]
        take = lambda t: t.gather(1, query_rows[:, :, None].expand(batch, rows, t.shape[-1]))
        q = attn.q_norm(attn.q_proj(take(normed)).view(batch, rows, -1, attn.head_dim)).transpose(1, 2)
        k = attn.k_norm(attn.k_proj(normed).view(batch, length, -1, attn.head_dim)).transpose(1, 2)
        q = q * take(cos).unsqueeze(1) + hf.rotate_half(q) * take(sin).unsqueeze(1)
        k = k * cos.unsqueeze(1) + hf.rotate_half(k) * sin.unsqueeze(1)
        return q, k, attn.scaling

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.thinker.lm_head(self.language_model.norm(hidden))


def _deepstack_as_addition(hidden_states: torch.Tensor, visual_pos_masks: torch.Tensor,
                           visual_embeds: torch.Tensor) -> torch.Tensor:
    # equal in value to transformers' masked in-place add: x + 0 off the mask, x + e on it
    addition = visual_embeds.new_zeros(*visual_pos_masks.shape, visual_embeds.shape[-1])
    addition = addition.masked_scatter(visual_pos_masks[..., None].to(hidden_states.device), visual_embeds)
    return hidden_states + addition.to(hidden_states.device, hidden_states.dtype)


_FORWARD_INPUTS = {
    "input_ids", "attention_mask", "input_features", "feature_attention_mask", "pixel_values",
    "pixel_values_videos", "image_grid_thw", "video_grid_thw", "use_audio_in_video", "video_second_per_grid",
}
