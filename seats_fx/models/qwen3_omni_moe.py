"""Qwen3-Omni MoE thinker: everything seats_fx needs to know about this model family, and nothing else.

Differences from Qwen2.5-Omni that matter here: audio and video tokens of a clip are merged by time
(not in 2 s chunks), the audio tower's attention runs on the LLM audio tokens themselves (no pooling
after it), the vision tower has no window permutation, attention normalises q and k per head, the MLP is
a mixture of experts, and "deepstack" adds vision features to the outputs of the first decoder layers.
"""

from __future__ import annotations

import torch
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf

from seats_fx.models.thinker import EncodedPrompt, ThinkerAdapter, capture_inputs, concatenated
from seats_fx.ops.relevance import encoder_attention_received

# the authors' 7B defaults as depth fractions (the paper gives no Qwen3-Omni layers; same fractions)
DROP_LAYER_FRACTIONS = (16 / 28, 18 / 28, 20 / 28)
LATE_BLOCK_FRACTION = 24 / 28


class Qwen3OmniMoeAdapter(ThinkerAdapter):
    """Model-family facts of `Qwen3OmniMoeThinkerForConditionalGeneration` (transformers 5.x)."""

    family = "qwen3_omni_moe"
    thinker_class = hf.Qwen3OmniMoeThinkerForConditionalGeneration
    drop_layer_fractions = DROP_LAYER_FRACTIONS
    late_block_fraction = LATE_BLOCK_FRACTION
    # ---- how the family shows up in Dynamo graphs (read by passes.locate; no instance needed) ----
    modeling_module = hf.__name__
    decoder_layer_class = hf.Qwen3OmniMoeThinkerTextDecoderLayer
    text_model_class = hf.Qwen3OmniMoeThinkerTextModel
    rotary_class = hf.Qwen3OmniMoeThinkerTextRotaryEmbedding
    vision_encoder_class = hf.Qwen3OmniMoeVisionEncoder
    audio_encoder_class = hf.Qwen3OmniMoeAudioEncoder
    audio_attention_class = hf.Qwen3OmniMoeAudioAttention
    vision_attention_class = hf.Qwen3OmniMoeVisionAttention
    # no window permutation in this vision tower: a run starts where its Conv3d patch embedding reads pixels
    vision_patch_embed_class = hf.Qwen3OmniMoeVisionPatchEmbed
    vision_window_index_local = None
    # TMRoPE positions per second a bare torch.compile(backend="seats") assumes when it cannot read the
    # model's config (transformers' default); the backend reads config.position_id_per_seconds otherwise
    position_id_per_seconds = 25
    spatial_merge_unit = 4  # 2x2 patches per LLM video token

    @staticmethod
    def audio_token_weights(frame_weights: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """The audio tower attends over the LLM audio tokens themselves: weights map one to one."""
        return frame_weights

    @staticmethod
    def vision_token_weights(patch_weights: torch.Tensor, window_index: torch.Tensor | None = None) -> torch.Tensor:
        """Returns per-LLM-token weights: mean over each run of 4 patches the merger concatenates."""
        return patch_weights.view(-1, Qwen3OmniMoeAdapter.spatial_merge_unit).mean(dim=1)

    def prepare_for_compile(self) -> None:
        """Makes deepstack traceable in one graph with the layers: transformers adds the vision features
        with boolean-mask indexing (`hidden[mask, :] += embeds`), a data-dependent shape on which Dynamo
        breaks the decoder into one graph per layer. The replacement adds the same values as one
        (B, L, D) per-token tensor (zero off the vision tokens), which the seats passes prune like cos/sin."""
        # a plain function as instance attribute (a bound method would make Dynamo name the language
        # model's submodules through it, and the final norm's path would no longer match)
        self.language_model._deepstack_process = _deepstack_as_addition

    # ---- before the decoder ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, inputs: dict, window_seconds: float) -> EncodedPrompt:
        """Returns the decoder input of a forward() call plus layout, stage-1 weights and the deepstack
        additions, running the model's own encoders, merge and get_rope_index as its forward does."""
        input_ids, attention_mask, embeds, weights = self.embed_text_and_audio(inputs)
        model = self.multimodal

        # deepstack: per decoder layer, a (B, L, D) addition that is zero off the vision tokens
        additions: list[torch.Tensor] = []
        for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                           ("video", "pixel_values_videos", "video_grid_thw")):
            pixels = inputs.get(pixels_key)
            if pixels is None:
                continue
            getter = model.get_image_features if kind == "image" else model.get_video_features
            with capture_inputs(self.visual.blocks[-1].attn) as seen:
                output = getter(pixels, inputs[grid_key], return_dict=True)
            image_mask, video_mask, _ = model.get_placeholder_mask(input_ids, inputs_embeds=embeds)
            mask = image_mask if kind == "image" else video_mask
            embeds = embeds.masked_scatter(mask, concatenated(output.pooler_output).to(embeds.dtype))
            weights[mask[..., 0]] = self._vision_token_weights(seen)
            for i, per_layer in enumerate(output.deepstack_features):
                dense = torch.zeros_like(embeds).masked_scatter(mask, concatenated(per_layer).to(embeds.dtype))
                if i < len(additions):
                    additions[i] = additions[i] + dense
                else:
                    additions.append(dense)

        position_ids, rope_deltas, layout = self.positions_and_layout(inputs, attention_mask, window_seconds)
        return EncodedPrompt(embeds, position_ids, rope_deltas, attention_mask, layout, weights, additions)

    def _vision_token_weights(self, seen) -> torch.Tensor:
        attn = self.visual.blocks[-1].attn
        args, kwargs = seen.calls[-1]
        hidden = args[0] if args else kwargs["hidden_states"]
        n = hidden.shape[0]
        q, k, _ = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = kwargs["position_embeddings"]
        q, k = hf.apply_rotary_pos_emb_vision(q, k, cos, sin)
        return self.vision_token_weights(encoder_attention_received(q, k, kwargs["cu_seqlens"], attn.scaling))


def _deepstack_as_addition(hidden_states: torch.Tensor, visual_pos_masks: torch.Tensor,
                           visual_embeds: torch.Tensor) -> torch.Tensor:
    # equal in value to transformers' masked in-place add: x + 0 off the mask, x + e on it
    addition = visual_embeds.new_zeros(*visual_pos_masks.shape, visual_embeds.shape[-1])
    addition = addition.masked_scatter(visual_pos_masks[..., None].to(hidden_states.device), visual_embeds)
    return hidden_states + addition.to(hidden_states.device, hidden_states.dtype)
