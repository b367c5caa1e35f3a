"""Real input processing: a video file (with its audio track) and a question -> thinker inputs, through the
checkpoint's own transformers processor (feature extractor, video processor, tokenizer, chat template)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoTokenizer, BatchFeature, Qwen2_5OmniProcessor, Qwen3OmniMoeProcessor, WhisperFeatureExtractor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from seats_fx.media.decode import read_audio_track
from seats_fx.media.frames import read_video_frames
from seats_fx.media.video_processor import FrameGroupVideoProcessor

log = logging.getLogger("seats_fx")

# The system prompt of Qwen2.5-Omni's model card; any system text works for text answers
DEFAULT_SYSTEM_PROMPT = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
                         "perceiving auditory and visual inputs, as well as generating text and speech.")
PROCESSOR_CLASSES = {"qwen2_5_omni": Qwen2_5OmniProcessor, "qwen3_omni_moe": Qwen3OmniMoeProcessor}


def _accepting_frame_video_processor(processor_class):
    """`processor_class` with its video-processor type check widened to FrameGroupVideoProcessor (transformers
    checks for its torchvision-backed base class, which cannot be imported without torchvision)."""

    class FrameVideoProcessor(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and isinstance(argument, FrameGroupVideoProcessor):
                return FrameGroupVideoProcessor
            return super().check_argument_for_proper_class(argument_name, argument)

    FrameVideoProcessor.__name__ = FrameVideoProcessor.__qualname__ = f"{processor_class.__name__}WithFrameVideo"
    return FrameVideoProcessor


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # an installed but mismatched build fails with RuntimeError, not ImportError
        return False
    return True


def build_processor(family: str, tokenizer, feature_extractor: WhisperFeatureExtractor, video_settings: dict,
                    image_settings: dict | None = None):
    """Assembles the family's transformers processor from its parts; the video part is transformers'
    Qwen2-VL video processor when torchvision is installed, else FrameGroupVideoProcessor."""
    if family not in PROCESSOR_CLASSES:
        raise ValueError(f"family must be one of {sorted(PROCESSOR_CLASSES)}, got {family!r}")
    image_processor = Qwen2VLImageProcessorPil(**(image_settings or {}))
    if torchvision_available():
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor(**video_settings)
        processor_class = PROCESSOR_CLASSES[family]
    elif family != "qwen2_5_omni":
        # Qwen3-Omni's video processor (Qwen3-VL's) resizes and timestamps frames its own way; no stand-in here
        raise ImportError(f"the {family} processor's video part needs torchvision (pip install torchvision "
                          "matching your torch); only Qwen2.5-Omni has a stand-in without it")
    else:
        log.info("seats_fx: torchvision is not installed; video frames go through transformers' PIL Qwen2-VL "
                 "image processor, grouped into temporal patches by seats_fx (FrameGroupVideoProcessor)")
        video_processor = FrameGroupVideoProcessor.from_settings(video_settings)
        processor_class = _accepting_frame_video_processor(PROCESSOR_CLASSES[family])
    return processor_class(image_processor=image_processor, video_processor=video_processor,
                           feature_extractor=feature_extractor, tokenizer=tokenizer,
                           chat_template=getattr(tokenizer, "chat_template", None))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_processor(model_dir: str | Path, family: str):
    """Loads the processor saved in a checkpoint directory (a real Qwen-Omni checkpoint or a tiny one)."""
    model_dir = Path(model_dir)
    if torchvision_available():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
    video_settings = _read_json(model_dir / "video_preprocessor_config.json")
    image_settings = {k: v for k, v in _read_json(model_dir / "preprocessor_config.json").items()
                      if k in ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")}
    if not video_settings:  # older checkpoints keep the video settings with the image processor's
        video_settings = dict(image_settings)
    return build_processor(family, tokenizer, feature_extractor, video_settings, image_settings)


def video_question_inputs(processor, video_path: str | Path, question: str, fps: float = 2.0,
                          max_pixels: int | None = None, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                          use_audio: bool = True) -> BatchFeature:
    """Returns thinker forward()/generate() kwargs (batch 1, torch tensors) for a chat turn holding the video
    (frames at `fps`, its audio track interleaved per the processor when `use_audio` and present) and the
    question, followed by the assistant prompt."""
    frames = read_video_frames(video_path, fps=fps)
    feature_extractor = processor.feature_extractor
    audio = read_audio_track(video_path, feature_extractor.sampling_rate) if use_audio else None
    if audio is not None and len(audio) > feature_extractor.n_samples:
        raise ValueError(
            f"{video_path}: the audio track lasts {len(audio) / feature_extractor.sampling_rate:.1f} s, longer than "
            f"the feature extractor's window of {feature_extractor.n_samples / feature_extractor.sampling_rate:.0f} s "
            "(chunk_length in preprocessor_config.json); it would be cut. Trim the clip or raise chunk_length.")
    messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]},
                {"role": "user", "content": [{"type": "video", "video": str(video_path)},
                                             {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    videos_kwargs = {"fps": fps}
    if max_pixels is not None:
        videos_kwargs["size"] = {"shortest_edge": min(max_pixels, 56 * 56), "longest_edge": max_pixels}
    kwargs = dict(text=[text], videos=[frames], return_tensors="pt", videos_kwargs=videos_kwargs)
    if audio is not None and len(audio):
        kwargs.update(audio=[audio], audio_from_video_indices=[0], load_audio_from_video=True)
    inputs = processor(**kwargs)
    inputs.pop("video_metadata", None)
    # the processor interleaved the track with the frames; the model must be told too, or its TMRoPE
    # positions treat them as two clips one after the other (the Qwen-Omni model card passes it alike)
    inputs["use_audio_in_video"] = "audio" in kwargs
    return inputs

