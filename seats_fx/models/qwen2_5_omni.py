"""Qwen2.5-Omni thinker: everything seats_fx needs to know about this model family, and nothing else."""

from __future__ import annotations

import numpy as np
import torch
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf
from transformers.vision_utils import get_vision_window_index

from seats_fx.models.thinker import CapturedInputs, EncodedPrompt, ThinkerAdapter, capture_inputs, concatenated
from seats_fx.ops.relevance import encoder_attention_received
from seats_fx.ops.sizes import host_table

# Authors' defaults for the 28-layer 7B model (drops after layers 16, 18, 20; text only from layer 24),
# kept as depth fractions so other depths (3B: 36 layers) scale with them.
DROP_LAYER_FRACTIONS = (16 / 28, 18 / 28, 20 / 28)
LATE_BLOCK_FRACTION = 24 / 28


class Qwen2_5OmniAdapter(ThinkerAdapter):
    """Model-family facts of `Qwen2_5OmniThinkerForConditionalGeneration` (transformers 5.x)."""

    family = "qwen2_5_omni"
    thinker_class = hf.Qwen2_5OmniThinkerForConditionalGeneration
    drop_layer_fractions = DROP_LAYER_FRACTIONS
    late_block_fraction = LATE_BLOCK_FRACTION
    # ---- how the family shows up in Dynamo graphs (read by passes.locate; no instance needed) ----
    # Module types (nn_module_stack entries, the module whose frame Dynamo compiles) and the names of
    # frame locals (Dynamo sources); never source text. See ThinkerAdapter for how each is used.
    modeling_module = hf.__name__
    decoder_layer_class = hf.Qwen2_5OmniDecoderLayer
    text_model_class = hf.Qwen2_5OmniThinkerTextModel
    rotary_class = hf.Qwen2_5OmniRotaryEmbedding
    vision_encoder_class = hf.Qwen2_5OmniVisionEncoder
    audio_encoder_class = hf.Qwen2_5OmniAudioEncoder
    audio_attention_class = hf.Qwen2_5OmniAudioAttention
    vision_attention_class = hf.Qwen2_5OmniVisionAttention
    vision_patch_embed_class = None  # vision runs start at the window permutation instead
    # the vision tower's window permutation: a local of the vision encoder's forward, handed to the graph
    # after the tower's chunk loop breaks it (maps the last block's patch order back to the LLM's)
    vision_window_index_local = "window_index"
    # TMRoPE temporal positions per second (config.position_id_per_seconds of every released checkpoint)
    position_id_per_seconds = 25
    spatial_merge_unit = 4  # 2x2 patches per LLM video token (spatial_merge_size 2 in every release)

    @staticmethod
    def audio_token_weights(frame_weights: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Returns per-LLM-token weights from per-frame ones: mean of the 2 frames each token pools."""
        return _pool_pairs(frame_weights, mel_lengths)

    @staticmethod
    def vision_token_weights(patch_weights: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor:
        """Returns per-LLM-token weights from per-patch ones given in window-permuted order."""
        merged = patch_weights.view(-1, Qwen2_5OmniAdapter.spatial_merge_unit).mean(dim=1)
        return merged[torch.argsort(window_index)]

    # ---- before the decoder ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, inputs: dict, window_seconds: float) -> EncodedPrompt:
        """Returns the decoder input of a forward() call plus layout and stage-1 weights.

        Runs the model's own encoders, merge and get_rope_index (as Qwen2_5OmniThinkerModel.forward does),
        recording the last encoder layers' attention inputs with forward pre-hooks to score tokens.
        """
        input_ids, attention_mask, embeds, weights = self.embed_text_and_audio(inputs)
        model = self.multimodal

        for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                           ("video", "pixel_values_videos", "video_grid_thw")):
            pixels = inputs.get(pixels_key)
            if pixels is None:
                continue
            grid = inputs[grid_key]
            with capture_inputs(self.visual.blocks[-1].attn) as seen:
                getter = model.get_image_features if kind == "image" else model.get_video_features
                pooled = concatenated(getter(pixels, grid, return_dict=True).pooler_output)
            image_mask, video_mask, _ = model.get_placeholder_mask(input_ids, inputs_embeds=embeds)
            mask = image_mask if kind == "image" else video_mask
            embeds = embeds.masked_scatter(mask, pooled.to(embeds.dtype))
            weights[mask[..., 0]] = self._vision_token_weights(seen, grid)

        position_ids, rope_deltas, layout = self.positions_and_layout(inputs, attention_mask, window_seconds)
        return EncodedPrompt(embeds, position_ids, rope_deltas, attention_mask, layout, weights)

    def _vision_token_weights(self, seen: CapturedInputs, grid_thw: torch.Tensor) -> torch.Tensor:
        """Returns attention received per merged vision token, in the order the LLM sees the tokens."""
        visual = self.visual
        attn = visual.blocks[-1].attn
        (hidden,), kwargs = seen.calls[-1]
        n = hidden.shape[0]
        q = attn.q(hidden).reshape(n, attn.num_heads, -1)
        k = attn.k(hidden).reshape(n, attn.num_heads, -1)
        cos, sin = kwargs["position_embeddings"]
        q, k = hf.apply_rotary_pos_emb_vision(q, k, cos, sin)
        received = encoder_attention_received(q, k, kwargs["cu_seqlens"], attn.scaling)
        window_index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size,
                                                  visual.patch_size)
        return self.vision_token_weights(received, window_index)


def _pool_pairs(frame_weights: torch.Tensor, mel_lengths: "torch.Tensor | list[int]") -> torch.Tensor:
    """Mean over the frame pairs the audio tower's stride-2 average pooling merges (get_pool_indices).
    mel_lengths as host ints (the backend's glue reads them with the layout) builds the pair index on the
    host, so no device data is read here; as a tensor, transformers' get_pool_indices reads it."""
    if isinstance(mel_lengths, torch.Tensor):
        pool = hf.get_pool_indices(mel_lengths)
        return (frame_weights[pool] + frame_weights[pool + 1]) / 2
    pairs = host_table(_pool_pair_index(mel_lengths), frame_weights.device)
    return frame_weights[pairs].view(-1, 2).mean(1)  # equal to (a + b) / 2: a sum of two, halved exactly


def _pool_pair_index(mel_lengths: list[int]) -> np.ndarray:
    """Returns [first, second] frame index of every pair the audio tower pools, in order: per audio,
    (mel - 1) // 2 + 1 frames after its stride-2 convolution, of which the first 2 * (frames // 2) pool.
    Built as arrays: a Python list of the indices took 1 ms for a 60 s clip here."""
    frames = (np.asarray(mel_lengths, dtype=np.int64) - 1) // 2 + 1
    offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
    pooled = 2 * ((frames - 2) // 2 + 1)
    return np.concatenate([np.arange(start, start + count, dtype=np.int64) for start, count in zip(offsets, pooled)]
                          + [np.zeros(0, dtype=np.int64)])
