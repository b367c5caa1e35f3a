"""The needle task: synthetic clips in the Qwen2.5-Omni processor's layout whose answer needs a few media tokens.

A clip is `windows` x 2 s at 2 fps with its audio track (`use_audio_in_video=True`: video and audio interleaved
per 2 s window, laid out by `seats_fx.models.synthetic.interleaved_clip_ids`, as the processor does).
Every window shows `distractors` grey patterned squares and plays `distractors` broadband noise bursts; once
per clip, in a random window, one square is coloured (the visual needle: its colour is one of `values`) and
one burst is a tone (the audio needle: its pitch is one of `values`). A square fills exactly one LLM video token
(one 28 x 28 merge cell of one 1 s temporal grid); a burst lasts 0.2 s, about 5 of the window's 50 audio tokens.

The question asks for the colour of the coloured square or the pitch of the tone; the answer is one token.
Colour, pitch, places and the question's modality are drawn independently and uniformly, so without the media
(or with another clip's) the answer is chance (1 / `values`). The evidence is one video token of the clip's
`windows * 16`, or about 5 audio tokens of `windows * 50`, among distractors that look as salient.

Frames are rendered as RGB images in [0, 1], quantised to 8 bits, normalised with the Qwen2-VL mean/std and cut
into patches in the Qwen2-VL processor's order (temporal patches of 2 frames, channels before time, 2 x 2 merge
blocks contiguous; tested against `seats_fx.media.video_processor.FrameGroupVideoProcessor`). Audio is rendered
directly as Whisper-style normalised log-mel features (128 bins, 100 frames per second, padded to 30 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn import functional as F

from seats_fx.media.video_processor import DEFAULT_VIDEO_SETTINGS
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config, token_ids_for_vocab
from seats_fx.models.synthetic import (MEL_FRAMES_PER_SECOND, WHISPER_PADDED_FRAMES, audio_tokens_for,
                                       interleaved_clip_ids)

VOCAB_SIZE = 128  # special tokens then sit at 96.. (token_ids_for_vocab); plain text ids stay below 96

# text token ids of the task's small vocabulary (all below the special ids)
SYSTEM = (0, 1, 2, 3)
USER, ASSISTANT, NEWLINE, QUESTION_MARK = 4, 5, 6, 7
ASK_COLOUR, ASK_PITCH = 8, 9  # "what colour was the coloured square", "what pitch was the tone"
SQUARE, TONE = 10, 11
COLOUR_BASE, PITCH_BASE = 16, 24  # + value: the answer tokens

VISUAL, AUDIO = 0, 1  # question modality

MERGE_CELL = 28  # pixels of one LLM video token (patch 14 x spatial merge 2)
MEL_FRAMES_PER_AUDIO_TOKEN = 4  # the audio tower halves the frames twice (conv stride 2, pooling stride 2)
WINDOW_SECONDS = 2
FPS = 2
MEL_BINS = 128
PATTERNS = 8  # squares carry one of 8 fixed 4 x 4 block patterns (irrelevant to the answer)
AUDIO_SLOTS = 4  # a window's audio splits into 4 slots of 0.5 s; bursts take distinct slots
# colours of the visual values: red, green, blue, yellow (distractors are grey)
PALETTE = torch.tensor([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 0.95], [0.95, 0.85, 0.1]])


@dataclass(frozen=True)
class NeedleSpec:
    """Sizes of the task. Frames are height x width pixels (multiples of 28)."""

    windows: int = 3
    distractors: int = 2  # grey squares and noise bursts per window
    values: int = 4
    height: int = 56
    width: int = 112
    burst_frames: int = 20  # mel frames of one burst (0.2 s)
    # the needles' size: video cells painted in the needle's colour, mel frames of the tone (training starts
    # with larger needles, bench/train_needle.py --curriculum; the benchmark uses the defaults)
    needle_cells: int = 1
    tone_frames: int = 20
    pixel_noise: float = 0.05
    mel_noise: float = 0.08

    @property
    def seconds(self) -> int:
        return self.windows * WINDOW_SECONDS

    @property
    def cells_per_grid(self) -> int:
        return (self.height // MERGE_CELL) * (self.width // MERGE_CELL)

    @property
    def video_tokens_per_window(self) -> int:
        return self.cells_per_grid * WINDOW_SECONDS  # one temporal grid (2 frames) per second

    @property
    def mel_frames(self) -> int:
        return self.seconds * MEL_FRAMES_PER_SECOND


def needle_tiny_spec() -> TinySpec:
    """Returns the widths of the thinker trained on the task: an 8-layer decoder, so that the depth-scaled
    stages all act (stage 2 after layers 5 and 6, text only from layer 7), and trained 2-layer encoders."""
    return TinySpec(vocab_size=VOCAB_SIZE, hidden_size=64, num_layers=8, num_heads=4, num_kv_heads=2,
                    intermediate_size=128, vision_depth=2, vision_hidden=32, audio_layers=2, audio_hidden=32)


def needle_config():
    """Returns the Qwen2.5-Omni thinker config the task's model is built (and trained) with."""
    return tiny_qwen2_5_omni_config(needle_tiny_spec())


@dataclass(frozen=True)
class Square:
    """A square shown for one 1 s temporal grid: window, grid in the window (0 or 1), merge cell (row-major),
    pattern, and colour (a value) or None for a grey distractor."""

    window: int
    grid: int
    cell: int
    pattern: int
    colour: int | None


@dataclass(frozen=True)
class Burst:
    """A burst: window, first mel frame in the window, its length in mel frames, and pitch (a value) or None
    for broadband noise."""

    window: int
    start: int
    frames: int
    pitch: int | None


@dataclass(frozen=True)
class ClipFacts:
    """What one clip shows and asks: its squares and bursts (the coloured square, `needle_cells` of them in one
    window, and exactly one tone), the question's modality (VISUAL: the square's colour, AUDIO: the tone's
    pitch) and the answer token id."""

    squares: tuple[Square, ...]
    bursts: tuple[Burst, ...]
    question: int
    answer: int

    @property
    def coloured_squares(self) -> list[Square]:
        return [s for s in self.squares if s.colour is not None]

    @property
    def tone(self) -> Burst:
        return next(b for b in self.bursts if b.pitch is not None)


def _randperm(n: int, gen: torch.Generator) -> list[int]:
    return torch.randperm(n, generator=gen).tolist()


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, high, (1,), generator=gen))


def sample_facts(spec: NeedleSpec, gen: torch.Generator) -> ClipFacts:
    """Returns one clip's squares, bursts and question, drawn from `gen`."""
    square_window, tone_window = _randint(spec.windows, gen), _randint(spec.windows, gen)
    colour, pitch = _randint(spec.values, gen), _randint(spec.values, gen)
    window_frames = WINDOW_SECONDS * MEL_FRAMES_PER_SECOND
    slot_frames = window_frames // AUDIO_SLOTS
    squares, bursts = [], []
    for window in range(spec.windows):
        square_colours = [None] * spec.distractors + ([colour] * spec.needle_cells if window == square_window else [])
        places = _randperm(spec.video_tokens_per_window, gen)
        for place, square_colour in zip(places, square_colours):
            squares.append(Square(window, place // spec.cells_per_grid, place % spec.cells_per_grid,
                                  _randint(PATTERNS, gen), square_colour))
        kinds = [(None, spec.burst_frames)] * spec.distractors + \
            ([(pitch, spec.tone_frames)] if window == tone_window else [])
        for slot, (burst_pitch, frames) in zip(_randperm(AUDIO_SLOTS, gen), kinds):
            if frames <= slot_frames:  # bursts that fit a slot never overlap
                start = slot * slot_frames + _randint(slot_frames - frames + 1, gen)
            else:
                start = _randint(window_frames - frames + 1, gen)
            bursts.append(Burst(window, start, frames, burst_pitch))
    question = _randint(2, gen)
    answer = COLOUR_BASE + colour if question == VISUAL else PITCH_BASE + pitch
    return ClipFacts(tuple(squares), tuple(bursts), question, answer)


@lru_cache(maxsize=1)
def pattern_masks() -> torch.Tensor:
    """Returns PATTERNS fixed, distinct 28 x 28 binary patterns (4 x 4 blocks of 7 px, 6 to 10 of them set)."""
    gen = torch.Generator().manual_seed(1234)
    masks: list[torch.Tensor] = []
    while len(masks) < PATTERNS:
        grid = torch.rand(4, 4, generator=gen) < 0.5
        if not 6 <= int(grid.sum()) <= 10 or any(bool((grid == m).all()) for m in masks):
            continue
        masks.append(grid)
    block = MERGE_CELL // 4
    return torch.stack(masks).float().repeat_interleave(block, 1).repeat_interleave(block, 2)


def render_frames(spec: NeedleSpec, facts: ClipFacts | None, gen: torch.Generator) -> torch.Tensor:
    """Returns (frames, height, width, 3) RGB in [0, 1] on 8-bit levels: a smooth, slowly changing
    low-saturation background with pixel noise and (unless facts is None: blank media) the clip's squares,
    each drawn in both frames of its temporal grid."""
    grids = spec.seconds * FPS // 2
    base = 0.35 + 0.3 * torch.rand(1, 3, 1, 1, generator=gen)
    tint = 0.5 * base + 0.5 * base.mean(dim=1, keepdim=True)  # low saturation: only the needle is coloured
    coarse = 0.15 * torch.randn(grids, 1, 2, 4, generator=gen) + 0.03 * torch.randn(grids, 3, 2, 4, generator=gen)
    background = tint + F.interpolate(coarse, size=(spec.height, spec.width), mode="bicubic", align_corners=False)
    video = background.repeat_interleave(2, dim=0)  # (frames, 3, H, W): 2 frames per temporal grid
    if facts is not None:
        masks = pattern_masks()
        across = spec.width // MERGE_CELL
        for square in facts.squares:
            if square.colour is None:
                colour = torch.full((3, 1, 1), 0.55 + 0.4 * float(torch.rand(1, generator=gen)))
            else:
                colour = PALETTE[square.colour].view(3, 1, 1)
            mask = masks[square.pattern]
            frame = 2 * (square.window * WINDOW_SECONDS + square.grid)
            top, left = (square.cell // across) * MERGE_CELL, (square.cell % across) * MERGE_CELL
            video[frame:frame + 2, :, top:top + MERGE_CELL, left:left + MERGE_CELL] = mask * colour + (1 - mask) * 0.08
    video = video + spec.pixel_noise * torch.randn(video.shape, generator=gen)
    video = torch.round(video.clamp(0, 1) * 255) / 255
    return video.permute(0, 2, 3, 1).contiguous()


def video_patches(frames: torch.Tensor, patch: int = 14, merge: int = 2, temporal: int = 2) -> torch.Tensor:
    """Returns (patches, 3 * temporal * patch * patch) pixel_values_videos of (frames, H, W, 3) RGB in [0, 1],
    normalised with the Qwen2-VL mean/std, in the Qwen2-VL processor's patch order."""
    count, height, width, _ = frames.shape
    mean = torch.tensor(DEFAULT_VIDEO_SETTINGS["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(DEFAULT_VIDEO_SETTINGS["image_std"]).view(1, 3, 1, 1)
    video = (frames.permute(0, 3, 1, 2) - mean) / std
    grid_t, grid_h, grid_w = count // temporal, height // patch, width // patch
    video = video.reshape(grid_t, temporal, 3, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    # (grid_t, blocks down, blocks across, merge rows, merge cols, channel, time, pixel row, pixel col)
    video = video.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return video.reshape(grid_t * grid_h * grid_w, 3 * temporal * patch * patch)


def tone_bins(pitch: int) -> tuple[int, int]:
    """Returns the mel bins of a pitch's fundamental and its overtone (pitches 16 bins apart)."""
    return 12 + 16 * pitch, 52 + 16 * pitch


def render_mel(spec: NeedleSpec, facts: ClipFacts | None, gen: torch.Generator) -> torch.Tensor:
    """Returns (128, mel_frames) normalised log-mel features: a noisy floor with a random spectral tilt and
    slow loudness drift and (unless facts is None: blank media) the clip's bursts: broadband noise with a
    random smooth spectrum, or a tone (two 3-bin bands)."""
    frames = spec.mel_frames
    level = -0.75 + 0.2 * float(torch.rand(1, generator=gen))
    tilt = torch.linspace(0, 1, MEL_BINS)[:, None] * (0.2 * float(torch.randn(1, generator=gen)))
    drift = F.interpolate(0.1 * torch.randn(1, 1, spec.seconds * 2, generator=gen), size=frames, mode="linear",
                          align_corners=False)[0]
    mel = level + tilt + drift + spec.mel_noise * torch.randn(MEL_BINS, frames, generator=gen)
    if facts is not None:
        window_frames = WINDOW_SECONDS * MEL_FRAMES_PER_SECOND
        for burst in facts.bursts:
            ramp = torch.ones(burst.frames)
            ramp[:3], ramp[-3:] = torch.tensor([0.3, 0.6, 0.9]), torch.tensor([0.9, 0.6, 0.3])
            loudness = 0.8 + 0.4 * float(torch.rand(1, generator=gen))
            if burst.pitch is None:
                shape = torch.rand(1, 1, 8, generator=gen)
                spectrum = 0.3 + 0.5 * F.interpolate(shape, size=MEL_BINS, mode="linear", align_corners=False)[0, 0]
            else:
                spectrum = torch.zeros(MEL_BINS)
                fundamental, overtone = tone_bins(burst.pitch)
                spectrum[fundamental - 1:fundamental + 2] = 1.0
                spectrum[overtone - 1:overtone + 2] = 0.7
            start = burst.window * window_frames + burst.start
            mel[:, start:start + burst.frames] += loudness * spectrum[:, None] * ramp[None, :]
    return mel.clamp(-1.5, 1.5)


def media_placeholder_ids(config, spec: NeedleSpec) -> list[int]:
    """Returns the clip's placeholder ids as the processor lays them out (vision_bos, audio_bos, per 2 s
    window the video tokens then the audio tokens, audio_eos, vision_eos)."""
    ids = token_ids_for_vocab(config.text_config.vocab_size)
    grid = (spec.seconds * FPS // 2, spec.height // 14, spec.width // 14)
    return interleaved_clip_ids(grid, 2, 2 / FPS, audio_tokens_for(config, spec.mel_frames), ids,
                                config.position_id_per_seconds, float(config.seconds_per_chunk))


def prompt_ids(config, spec: NeedleSpec, question: int, with_media: bool = True) -> list[int]:
    """Returns the chat prompt's token ids: system turn, user turn with the clip and the question, assistant
    header (with_media=False: the same prompt without the clip's placeholders)."""
    ids = token_ids_for_vocab(config.text_config.vocab_size)
    media = media_placeholder_ids(config, spec) if with_media else []
    ask = [ASK_COLOUR, SQUARE] if question == VISUAL else [ASK_PITCH, TONE]
    return [ids["im_start"], *SYSTEM, ids["im_end"], NEWLINE, ids["im_start"], USER, NEWLINE, *media,
            *ask, QUESTION_MARK, ids["im_end"], NEWLINE, ids["im_start"], ASSISTANT, NEWLINE]


@dataclass
class NeedleBatch:
    """Model inputs of a batch of clips (every clip has the same length, so no padding), the answer token of
    each, and its facts."""

    inputs: dict
    answers: torch.Tensor
    facts: list[ClipFacts]

    def sample(self, index: int) -> dict:
        """Returns forward() kwargs of clip `index` alone."""
        return select_clips(self.inputs, [index])


def select_clips(inputs: dict, indices: list[int]) -> dict:
    """Returns forward() kwargs holding only the clips `indices` of a batch (media inputs, if any, included)."""
    batch = inputs["input_ids"].shape[0]
    picked = {key: value[indices] for key, value in inputs.items()
              if isinstance(value, torch.Tensor) and key != "pixel_values_videos"}
    if "pixel_values_videos" in inputs:
        pixels = inputs["pixel_values_videos"]
        picked["pixel_values_videos"] = pixels.view(batch, pixels.shape[0] // batch, -1)[indices].flatten(0, 1)
    if inputs.get("use_audio_in_video"):
        picked["use_audio_in_video"] = True
    return picked


MEDIA_KINDS = ("real", "blank", "shuffled", "none")


def needle_batch(config, spec: NeedleSpec, seed: int, count: int, media: str = "real") -> NeedleBatch:
    """Returns `count` clips drawn from `seed` (the same seed gives the same questions whatever `media` says).

    media: "real" (each clip's own frames and audio), "blank" (background and noise floor only: no squares,
    no bursts), "shuffled" (clip i gets the frames and audio of clip i+1 of the batch, its own question) or
    "none" (the prompt without the clip: text only)."""
    if media not in MEDIA_KINDS:
        raise ValueError(f"media must be one of {MEDIA_KINDS}, got {media!r}")
    gen = torch.Generator().manual_seed(seed)
    facts = [sample_facts(spec, gen) for _ in range(count)]
    answers = torch.tensor([clip.answer for clip in facts])
    ids = torch.tensor([prompt_ids(config, spec, clip.question, with_media=media != "none") for clip in facts])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if media == "none":
        return NeedleBatch(inputs, answers, facts)
    render_gen = torch.Generator().manual_seed(seed + 1_000_003)
    patches, mels = [], []
    for clip in facts:
        shown = None if media == "blank" else clip
        patches.append(video_patches(render_frames(spec, shown, render_gen)))
        mels.append(render_mel(spec, shown, render_gen))
    if media == "shuffled":
        patches, mels = patches[1:] + patches[:1], mels[1:] + mels[:1]
    padded = max(WHISPER_PADDED_FRAMES, spec.mel_frames)
    features = torch.zeros(count, MEL_BINS, padded)
    features[:, :, :spec.mel_frames] = torch.stack(mels)
    feature_mask = torch.zeros(count, padded, dtype=torch.long)
    feature_mask[:, :spec.mel_frames] = 1
    inputs.update({
        "pixel_values_videos": torch.cat(patches),
        "video_grid_thw": torch.tensor([[spec.seconds * FPS // 2, spec.height // 14, spec.width // 14]] * count),
        "video_second_per_grid": torch.full((count,), 2 / FPS),
        "input_features": features,
        "feature_attention_mask": feature_mask,
        "use_audio_in_video": True,
    })
    return NeedleBatch(inputs, answers, facts)


def evidence_positions(config, spec: NeedleSpec, facts: ClipFacts) -> list[int]:
    """Returns the prompt positions of the tokens that show what the question asks about: the coloured
    square's video token (one per cell it fills), or the audio tokens whose 4 mel frames overlap the tone."""
    prompt = prompt_ids(config, spec, facts.question)
    if facts.question == VISUAL:
        video_positions = [i for i, t in enumerate(prompt) if t == config.video_token_id]
        return sorted(video_positions[(s.window * WINDOW_SECONDS + s.grid) * spec.cells_per_grid + s.cell]
                      for s in facts.coloured_squares)
    tone = facts.tone
    audio_positions = [i for i, t in enumerate(prompt) if t == config.audio_token_id]
    start = tone.window * WINDOW_SECONDS * MEL_FRAMES_PER_SECOND + tone.start
    first, last = start // MEL_FRAMES_PER_AUDIO_TOKEN, (start + tone.frames - 1) // MEL_FRAMES_PER_AUDIO_TOKEN
    return audio_positions[first:last + 1]
