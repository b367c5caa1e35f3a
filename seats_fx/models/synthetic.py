"""Synthetic omni inputs laid out exactly as the Qwen-Omni processor lays them out (audio in video)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seats_fx.models.configs import token_ids_for_vocab

MEL_FRAMES_PER_SECOND = 100  # Whisper feature extractor: 16 kHz audio, hop 160
WHISPER_PADDED_FRAMES = 3000  # the processor pads audio features to 30 s


@dataclass(frozen=True)
class ClipSpec:
    """A synthetic clip: seconds of video at `fps` (with an audio track of `audio_seconds`), frame size in
    pixels, and prompt lengths in text tokens. audio_seconds=None means as long as the video; 0 means none."""

    video_seconds: int = 8
    audio_seconds: float | None = None
    fps: float = 2.0
    height: int = 112
    width: int = 112
    system_tokens: int = 12
    question_tokens: int = 10
    seed: int = 0


def audio_tokens_for_frames(mel_frames: int) -> int:
    """Returns the number of LLM audio tokens the Qwen2.5-Omni audio tower makes from `mel_frames` frames."""
    after_conv = (mel_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def _chunk_lengths(temporal_positions: list[int], per_chunk: int) -> list[int]:
    """Returns run lengths of consecutive positions falling in chunks [0, per_chunk), [per_chunk, ...)."""
    lengths: list[int] = []
    current, count = 1, 0
    for position in temporal_positions:
        while position >= current * per_chunk:
            lengths.append(count)
            count, current = 0, current + 1
        count += 1
    lengths.append(count)
    return lengths


def interleaved_clip_ids(grid_thw: tuple[int, int, int], merge_size: int, second_per_grid: float,
                         audio_tokens: int, ids: dict[str, int], position_id_per_seconds: int = 25,
                         seconds_per_chunk: float = 2.0) -> list[int]:
    """Returns the placeholder ids of one clip with its audio: vision_bos, audio_bos, per-chunk video then
    audio tokens, audio_eos, vision_eos — the layout of Qwen2.5OmniProcessor with use_audio_in_video."""
    grid_t, grid_h, grid_w = grid_thw
    per_grid = (grid_h // merge_size) * (grid_w // merge_size)
    per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    video_positions = [int(t * second_per_grid * position_id_per_seconds) for t in range(grid_t) for _ in range(per_grid)]
    video_chunks = _chunk_lengths(video_positions, per_chunk) if grid_t else []
    audio_chunks = _chunk_lengths(list(range(audio_tokens)), per_chunk) if audio_tokens else []
    body: list[int] = []
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            body += [ids["video"]] * video_chunks[j]
        if j < len(audio_chunks):
            body += [ids["audio"]] * audio_chunks[j]
    return [ids["vision_bos"], ids["audio_bos"], *body, ids["audio_eos"], ids["vision_eos"]]


def time_sorted_clip_ids(grid_thw: tuple[int, int, int], merge_size: int, second_per_grid: float,
                         audio_tokens: int, ids: dict[str, int], position_id_per_seconds: int) -> list[int]:
    """Returns the placeholder ids of one clip with its audio in Qwen3-Omni's layout: vision_bos, audio_bos,
    video and audio tokens merged by TMRoPE temporal position (video first on ties; audio token k sits at
    k), audio_eos, vision_eos — the order its get_rope_index assigns positions in."""
    grid_t, grid_h, grid_w = grid_thw
    per_grid = (grid_h // merge_size) * (grid_w // merge_size)
    video = [t * second_per_grid * position_id_per_seconds for t in range(grid_t) for _ in range(per_grid)]
    body, v, a = [], 0, 0
    while v < len(video) or a < audio_tokens:
        if a >= audio_tokens or (v < len(video) and video[v] <= a):
            body.append(ids["video"])
            v += 1
        else:
            body.append(ids["audio"])
            a += 1
    return [ids["vision_bos"], ids["audio_bos"], *body, ids["audio_eos"], ids["vision_eos"]]


def _is_qwen3(config) -> bool:
    return str(getattr(config, "model_type", "")).startswith("qwen3_omni")


def audio_tokens_for(config, mel_frames: int) -> int:
    """Returns the LLM audio tokens the family's audio tower makes from `mel_frames` mel frames."""
    if _is_qwen3(config):
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import _get_feat_extract_output_lengths

        return int(_get_feat_extract_output_lengths(torch.tensor(mel_frames), config.audio_config.n_window))
    return audio_tokens_for_frames(mel_frames)


def synthetic_clip_inputs(config, clip: ClipSpec = ClipSpec()) -> dict[str, torch.Tensor]:
    """Returns forward() kwargs for a Qwen2.5-Omni thinker: a chat prompt (system, user turn with one clip
    and a question, assistant header) with real-shaped pixel_values_videos, video_grid_thw,
    input_features, feature_attention_mask and use_audio_in_video=True, so the model's own encoders and
    get_rope_index run on them."""
    vision, audio_cfg = config.vision_config, config.audio_config
    vocab = config.text_config.vocab_size
    ids = token_ids_for_vocab(vocab) if vocab <= 151643 else token_ids_for_vocab(152064)
    ids.update(video=config.video_token_id, audio=config.audio_token_id,
               audio_bos=config.audio_start_token_id, vision_bos=config.vision_start_token_id)
    gen = torch.Generator().manual_seed(clip.seed)
    patch, merge, temporal_patch = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    if clip.height % (patch * merge) or clip.width % (patch * merge):
        raise ValueError(f"frame size must be a multiple of patch*merge={patch * merge}, "
                         f"got {clip.height}x{clip.width}")
    frames = round(clip.video_seconds * clip.fps)
    if frames % temporal_patch:
        raise ValueError(f"{frames} frames is not a multiple of the temporal patch {temporal_patch}")
    grid = (frames // temporal_patch, clip.height // patch, clip.width // patch)
    second_per_grid = temporal_patch / clip.fps
    audio_seconds = clip.video_seconds if clip.audio_seconds is None else clip.audio_seconds
    mel_frames = int(round(audio_seconds * MEL_FRAMES_PER_SECOND))
    audio_tokens = audio_tokens_for(config, mel_frames) if mel_frames else 0

    text_ids = lambda n: torch.randint(0, min(vocab, 151643) - 64, (n,), generator=gen).tolist()
    prompt = [ids["im_start"], *text_ids(clip.system_tokens), ids["im_end"], ids["im_start"], *text_ids(2)]
    if audio_tokens and _is_qwen3(config):
        prompt += time_sorted_clip_ids(grid, merge, second_per_grid, audio_tokens, ids, config.position_id_per_seconds)
    else:
        prompt += interleaved_clip_ids(grid, merge, second_per_grid, audio_tokens, ids,
                                       config.position_id_per_seconds, float(config.seconds_per_chunk)) \
            if audio_tokens else [ids["vision_bos"], *[ids["video"]] * (grid[0] * grid[1] * grid[2] // merge ** 2),
                              ids["vision_eos"]]
    prompt += [*text_ids(clip.question_tokens), ids["im_end"], ids["im_start"], *text_ids(2)]

    patch_dim = vision.in_channels * temporal_patch * patch * patch
    inputs = {
        "input_ids": torch.tensor([prompt]),
        "attention_mask": torch.ones(1, len(prompt), dtype=torch.long),
        "pixel_values_videos": torch.randn(grid[0] * grid[1] * grid[2], patch_dim, generator=gen),
        "video_grid_thw": torch.tensor([grid]),
        "video_second_per_grid": torch.tensor([second_per_grid]),
    }
    if audio_tokens:
        padded = max(WHISPER_PADDED_FRAMES, mel_frames)
        features = torch.zeros(1, audio_cfg.num_mel_bins, padded)
        features[..., :mel_frames] = torch.randn(1, audio_cfg.num_mel_bins, mel_frames, generator=gen)
        mask = torch.zeros(1, padded, dtype=torch.long)
        mask[:, :mel_frames] = 1
        inputs.update(input_features=features, feature_attention_mask=mask, use_audio_in_video=True)
    return inputs


def batch_inputs(samples: list[dict[str, torch.Tensor]], pad_id: int, padding_side: str = "left") -> dict:
    """Returns one batch of single-sample forward() kwargs, as the processor batches them: token ids and
    attention masks padded to the longest prompt on `padding_side`, media tensors concatenated in order."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if any(s["input_ids"].shape[0] != 1 for s in samples):
        raise ValueError("batch_inputs takes single-sample inputs")
    width = max(s["input_ids"].shape[1] for s in samples)
    ids, masks = [], []
    for sample in samples:
        missing = width - sample["input_ids"].shape[1]
        pad = (missing, 0) if padding_side == "left" else (0, missing)
        ids.append(torch.nn.functional.pad(sample["input_ids"], pad, value=pad_id))
        masks.append(torch.nn.functional.pad(sample["attention_mask"], pad, value=0))
    batch = {"input_ids": torch.cat(ids), "attention_mask": torch.cat(masks)}
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid", "pixel_values", "image_grid_thw",
                "input_features", "feature_attention_mask"):
        parts = [s[key] for s in samples if key in s]
        if parts and len(parts) != len(samples) and key in ("input_features", "feature_attention_mask"):
            raise ValueError("batch_inputs needs every sample with audio or none (the processor's layout)")
        if parts:
            batch[key] = torch.cat(parts)
    if any(s.get("use_audio_in_video") for s in samples):
        batch["use_audio_in_video"] = True
    return batch


def _special_ids(config) -> dict[str, int]:
    vocab = config.text_config.vocab_size
    ids = token_ids_for_vocab(vocab) if vocab <= 151643 else token_ids_for_vocab(152064)
    ids.update(video=config.video_token_id, audio=config.audio_token_id, image=config.image_token_id,
               audio_bos=config.audio_start_token_id, vision_bos=config.vision_start_token_id)
    return ids


def _chat(ids: dict[str, int], media: list[int], gen: torch.Generator, vocab: int, question_tokens: int = 10):
    text = lambda n: torch.randint(0, min(vocab, 151643) - 64, (n,), generator=gen).tolist()
    prompt = [ids["im_start"], *text(12), ids["im_end"], ids["im_start"], *text(2), *media, *text(question_tokens),
              ids["im_end"], ids["im_start"], *text(2)]
    return {"input_ids": torch.tensor([prompt]), "attention_mask": torch.ones(1, len(prompt), dtype=torch.long)}


def synthetic_image_inputs(config, height: int = 112, width: int = 112, seed: int = 0) -> dict[str, torch.Tensor]:
    """Returns forward() kwargs of a chat prompt with one image (pixel_values, image_grid_thw), laid out as
    the processor lays it out: vision_bos, image tokens, vision_eos."""
    vision = config.vision_config
    patch, merge = vision.patch_size, vision.spatial_merge_size
    if height % (patch * merge) or width % (patch * merge):
        raise ValueError(f"image size must be a multiple of patch*merge={patch * merge}, got {height}x{width}")
    ids, gen = _special_ids(config), torch.Generator().manual_seed(seed)
    grid = (1, height // patch, width // patch)  # an image is one temporal patch (its frame repeated)
    media = [ids["vision_bos"], *[ids["image"]] * (grid[1] * grid[2] // merge ** 2), ids["vision_eos"]]
    inputs = _chat(ids, media, gen, config.text_config.vocab_size)
    patch_dim = vision.in_channels * vision.temporal_patch_size * patch * patch
    inputs.update(pixel_values=torch.randn(grid[1] * grid[2], patch_dim, generator=gen), image_grid_thw=torch.tensor([grid]))
    return inputs


def synthetic_audio_inputs(config, seconds: float = 6.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Returns forward() kwargs of a chat prompt with one audio clip (no video): audio_bos, audio tokens,
    audio_eos, with Whisper-shaped input_features padded to 30 s."""
    ids, gen = _special_ids(config), torch.Generator().manual_seed(seed)
    mel_frames = int(round(seconds * MEL_FRAMES_PER_SECOND))
    if mel_frames < 4:
        raise ValueError(f"audio of {seconds} s is too short for one audio token")
    media = [ids["audio_bos"], *[ids["audio"]] * audio_tokens_for(config, mel_frames), ids["audio_eos"]]
    inputs = _chat(ids, media, gen, config.text_config.vocab_size)
    padded = max(WHISPER_PADDED_FRAMES, mel_frames)
    features = torch.zeros(1, config.audio_config.num_mel_bins, padded)
    features[..., :mel_frames] = torch.randn(1, config.audio_config.num_mel_bins, mel_frames, generator=gen)
    mask = torch.zeros(1, padded, dtype=torch.long)
    mask[:, :mel_frames] = 1
    inputs.update(input_features=features, feature_attention_mask=mask)
    return inputs
