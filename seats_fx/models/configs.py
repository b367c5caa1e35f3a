"""Thinker configs: tiny random-weight ones for tests and the demo, and the real 3B / 7B / 30B-A3B shapes."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerConfig, Qwen3OmniMoeThinkerConfig

# Real special-token ids of the Qwen2.5-Omni / Qwen3-Omni tokenizer.
REAL_TOKEN_IDS = {
    "pad": 151643, "im_start": 151644, "im_end": 151645, "audio": 151646, "audio_bos": 151647, "audio_eos": 151648,
    "vision_bos": 151652, "vision_eos": 151653, "image": 151655, "video": 151656,
}
_FIRST_SPECIAL = 151643


@dataclass(frozen=True)
class TinySpec:
    """Widths of a tiny thinker. `vocab_size` small keeps logits cheap; special ids then sit at its top."""

    vocab_size: int = 1024
    hidden_size: int = 64
    num_layers: int = 8
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vision_depth: int = 2
    vision_hidden: int = 32
    audio_layers: int = 2
    audio_hidden: int = 32
    # Qwen3-Omni MoE decoder only
    num_experts: int = 4
    experts_per_token: int = 2


def token_ids_for_vocab(vocab_size: int) -> dict[str, int]:
    """Returns the special-token ids used with a vocabulary: the real ones, or moved to its top when small."""
    if vocab_size > max(REAL_TOKEN_IDS.values()):
        return dict(REAL_TOKEN_IDS)
    top = vocab_size - 32
    return {name: top + (real - _FIRST_SPECIAL) for name, real in REAL_TOKEN_IDS.items()}


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    temporal = half - 2 * (half * 3 // 8)
    return [temporal, half * 3 // 8, half * 3 // 8]


def tiny_qwen2_5_omni_config(spec: TinySpec = TinySpec()) -> Qwen2_5OmniThinkerConfig:
    """Returns a Qwen2.5-Omni thinker config with tiny widths and the real layout rules."""
    ids = token_ids_for_vocab(spec.vocab_size)
    head_dim = spec.hidden_size // spec.num_heads
    config = Qwen2_5OmniThinkerConfig(
        text_config=dict(
            vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": _mrope_section(head_dim)},
        ),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
            num_heads=2, out_hidden_size=spec.hidden_size, fullatt_block_indexes=[spec.vision_depth - 1],
            window_size=112, patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
        ),
        audio_config=dict(
            encoder_layers=spec.audio_layers, d_model=spec.audio_hidden, encoder_attention_heads=2,
            encoder_ffn_dim=2 * spec.audio_hidden, output_dim=spec.hidden_size, num_mel_bins=128, n_window=100,
            max_source_positions=1500,
        ),
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
    )
    # transformers' thinker config lacks these; real checkpoints carry them
    config.vision_start_token_id = ids["vision_bos"]
    config.vision_end_token_id = ids["vision_eos"]
    return config


def tiny_qwen2_5_omni_full_config(spec: TinySpec = TinySpec()) -> Qwen2_5OmniConfig:
    """Returns a full Qwen2.5-Omni config (thinker + talker + token2wav), every part tiny."""
    thinker = tiny_qwen2_5_omni_config(spec)
    talker = dict(
        vocab_size=1024, embedding_size=spec.hidden_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=2, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.hidden_size // spec.num_heads,
        audio_token_index=thinker.audio_token_id, image_token_index=thinker.image_token_id,
        video_token_index=thinker.video_token_id, vision_start_token_id=thinker.vision_start_token_id,
        audio_start_token_id=thinker.audio_start_token_id, tts_codec_start_token_id=1000,
        tts_codec_end_token_id=1001, tts_codec_pad_token_id=1002, tts_codec_mask_token_id=1003,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                         "mrope_section": _mrope_section(spec.hidden_size // spec.num_heads)})
    token2wav = dict(
        dit_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=32, ff_mult=2, emb_dim=32,
                        enc_emb_dim=32, enc_dim=32, enc_channels=[32, 32, 32, 32, 64], enc_attention_channels=16,
                        enc_res2net_scale=2, enc_se_channels=16, repeats=1, num_embeds=1024, mel_dim=80),
        bigvgan_config=dict(mel_dim=80, upsample_initial_channel=32, resblock_kernel_sizes=[3],
                            resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[5, 3, 2, 2, 2, 2],
                            upsample_kernel_sizes=[11, 7, 4, 4, 4, 4]))
    return Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), talker_config=talker, token2wav_config=token2wav)


def tiny_qwen3_omni_moe_config(spec: TinySpec = TinySpec()) -> Qwen3OmniMoeThinkerConfig:
    """Returns a Qwen3-Omni MoE thinker config with tiny widths (deepstack and MoE kept, just small)."""
    ids = token_ids_for_vocab(spec.vocab_size)
    head_dim = spec.hidden_size // spec.num_heads
    config = Qwen3OmniMoeThinkerConfig(
        text_config=dict(
            vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, head_dim=head_dim, max_position_embeddings=32768,
            moe_intermediate_size=spec.intermediate_size // 2, num_experts=spec.num_experts,
            num_experts_per_tok=spec.experts_per_token,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": _mrope_section(head_dim), "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=spec.vision_depth + 1, hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
            num_heads=2, out_hidden_size=spec.hidden_size, patch_size=16, temporal_patch_size=2,
            spatial_merge_size=2, num_position_embeddings=64,
            deepstack_visual_indexes=list(range(spec.vision_depth)),
        ),
        audio_config=dict(
            encoder_layers=spec.audio_layers, d_model=spec.audio_hidden, encoder_attention_heads=2,
            encoder_ffn_dim=2 * spec.audio_hidden, output_dim=spec.hidden_size, num_mel_bins=128,
            n_window=50, n_window_infer=800, conv_chunksize=500, downsample_hidden_size=16,
            max_source_positions=1500,
        ),
        audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
        audio_start_token_id=ids["audio_bos"],
    )
    config.audio_end_token_id = ids["audio_eos"]
    config.vision_start_token_id = ids["vision_bos"]
    config.vision_end_token_id = ids["vision_eos"]
    return config


def real_qwen2_5_omni_config(size: str) -> Qwen2_5OmniThinkerConfig:
    """Returns the thinker config of Qwen2.5-Omni-3B or -7B (public config.json values), for meta-device use."""
    shapes = {
        "7B": dict(hidden=3584, inter=18944, layers=28, heads=28, kv=4, vocab=152064),
        "3B": dict(hidden=2048, inter=11008, layers=36, heads=16, kv=2, vocab=151936),
    }
    if size not in shapes:
        raise ValueError(f"Qwen2.5-Omni size must be one of {sorted(shapes)}, got {size!r}")
    s = shapes[size]
    config = Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inter"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv"], max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=s["hidden"], fullatt_block_indexes=[7, 15, 23, 31]),
        audio_config=dict(encoder_layers=32, d_model=1280, encoder_attention_heads=20, encoder_ffn_dim=5120,
                          output_dim=s["hidden"]),
    )
    config.vision_start_token_id = REAL_TOKEN_IDS["vision_bos"]
    config.vision_end_token_id = REAL_TOKEN_IDS["vision_eos"]
    return config


def real_qwen3_omni_moe_config() -> Qwen3OmniMoeThinkerConfig:
    """Returns the thinker config of Qwen3-Omni-30B-A3B (public config.json values), for meta-device use."""
    config = Qwen3OmniMoeThinkerConfig(
        text_config=dict(vocab_size=152064, hidden_size=2048, intermediate_size=768, num_hidden_layers=48,
                         num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                         moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                         max_position_embeddings=65536,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [24, 20, 20], "mrope_interleaved": True}),
        vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                           out_hidden_size=2048, deepstack_visual_indexes=[8, 16, 24]),
        audio_config=dict(encoder_layers=32, d_model=1280, encoder_attention_heads=20, encoder_ffn_dim=5120,
                          output_dim=2048, n_window=50, downsample_hidden_size=480),
    )
    config.vision_start_token_id = REAL_TOKEN_IDS["vision_bos"]
    config.vision_end_token_id = REAL_TOKEN_IDS["vision_eos"]
    return config
