"""The user's path: a real video file with an audio track, a question, a checkpoint directory (a tiny one saved
with save_pretrained here) -> the transformers processor -> a pruned thinker; the CLI's run and report."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from seats_fx.__main__ import main
from seats_fx.checkpoint import load_checkpoint
from seats_fx.media.decode import read_audio_track, video_duration_seconds
from seats_fx.media.frames import read_video_frames
from seats_fx.media.sample_clip import SampleClipSpec, _frame, write_sample_clip
from seats_fx.media.video_processor import FrameGroupVideoProcessor
from seats_fx.models import adapter_for
from seats_fx.models.tiny_checkpoint import save_tiny_checkpoint
from seats_fx.models.tiny_tokenizer import tiny_tokenizer
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.processing import build_processor, torchvision_available, video_question_inputs

from test_backend import assert_matches_reference

SHIPPED_CLIP = Path(__file__).parent.parent / "data" / "shapes_and_tones.mp4"
# a frame cap that keeps the tiny checkpoint's prompt short (12 frames -> 144 video tokens)
MAX_PIXELS = 112 * 168
QUESTION = "What moves, and what do you hear?"


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-omni"))


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir):
    return load_checkpoint(checkpoint_dir)


def _pitch(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


# ---- the clip ---------------------------------------------------------------------------------------
def test_shipped_clip_decodes_to_what_the_script_drew_and_played():
    spec = SampleClipSpec()
    assert video_duration_seconds(SHIPPED_CLIP) == pytest.approx(spec.seconds, abs=0.1)
    frames = read_video_frames(SHIPPED_CLIP, fps=2.0)
    assert frames.shape == (spec.seconds * 2, spec.height, spec.width, 3)
    for index, frame in enumerate(frames):
        drawn = _frame(spec, index * spec.fps // 2).astype(float)
        assert np.abs(frame.astype(float) - drawn).mean() < 6, f"frame {index} is not the drawn one"
    audio = read_audio_track(SHIPPED_CLIP)
    assert len(audio) == pytest.approx(spec.seconds * 16000, rel=0.02)
    for second in range(spec.seconds):  # the middle of each second, away from the pitch changes
        middle = audio[second * 16000 + 2000:(second + 1) * 16000 - 2000]
        assert _pitch(middle, 16000) == pytest.approx(spec.pitches_hz[second % len(spec.pitches_hz)], abs=3)


def test_the_script_writes_a_clip_that_decodes(tmp_path):
    path = write_sample_clip(tmp_path / "clip.mp4", SampleClipSpec(seconds=2))
    assert read_video_frames(path, fps=2.0).shape[0] == 4
    assert read_video_frames(path, fps=1.0, max_frames=1).shape[0] == 1
    assert len(read_audio_track(path)) == pytest.approx(2 * 16000, rel=0.05)


def test_missing_file_and_bad_fps_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no video file"):
        read_video_frames(tmp_path / "nothing.mp4")
    with pytest.raises(ValueError, match="fps must be > 0"):
        read_video_frames(SHIPPED_CLIP, fps=0)


# ---- the processor ----------------------------------------------------------------------------------
def test_frame_group_video_processor_lays_patches_out_as_the_vision_tower_reads_them():
    """Two different frames: each temporal patch holds channel c of frame t at [c, t] (the Conv3d layout),
    and frame t's values are those transformers' own Qwen2-VL image processor makes of that frame."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(0)
    first, second = (rng.integers(0, 255, (112, 140, 3), dtype=np.uint8) for _ in range(2))
    size = {"shortest_edge": 56 * 56, "longest_edge": 112 * 140}
    out = FrameGroupVideoProcessor(size=size)(np.stack([first, second]))
    image_processor = Qwen2VLImageProcessorPil(size=size)
    assert out["video_grid_thw"].tolist() == [[1, 8, 10]]
    patches = out["pixel_values_videos"].reshape(-1, 3, 2, 14, 14)
    for t, frame in enumerate((first, second)):
        alone = np.asarray(image_processor([frame])["pixel_values"]).reshape(-1, 3, 2, 14, 14)
        np.testing.assert_array_equal(patches[:, :, t], alone[:, :, 0])
    # an odd frame count repeats the last frame, as transformers' video processor does
    odd = FrameGroupVideoProcessor(size=size)(np.stack([first, second, first]))
    assert odd["video_grid_thw"].tolist() == [[2, 8, 10]]
    last = odd["pixel_values_videos"].reshape(2, -1, 3, 2, 14, 14)[1]
    np.testing.assert_array_equal(last[:, :, 0], last[:, :, 1])


def test_tiny_tokenizer_round_trips_text_and_has_the_real_special_tokens():
    tokenizer = tiny_tokenizer()
    text = "Which shape moves left to right? ünïcode, 2 fps"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    for name in ("<|AUDIO|>", "<|VIDEO|>", "<|IMAGE|>", "<|vision_bos|>", "<|audio_bos|>", "<|im_start|>"):
        assert tokenizer(name)["input_ids"] == [tokenizer.convert_tokens_to_ids(name)]


def test_processor_interleaves_the_clip_as_the_model_expects(checkpoint):
    inputs = video_question_inputs(checkpoint.processor, SHIPPED_CLIP, QUESTION, max_pixels=MAX_PIXELS)
    config = checkpoint.thinker.config
    ids = inputs["input_ids"][0]
    grid = inputs["video_grid_thw"][0].tolist()
    assert grid[0] == 6  # 12 frames at 2 fps, 2 per temporal patch
    assert int((ids == config.video_token_id).sum()) == grid[0] * grid[1] * grid[2] // 4
    audio_frames = int(inputs["feature_attention_mask"].sum())
    assert audio_frames == pytest.approx(600, abs=4)  # 6 s of 10 ms mel frames
    assert int((ids == config.audio_token_id).sum()) == ((audio_frames - 1) // 2 + 1 - 2) // 2 + 1
    # one block per window: vision_bos, audio_bos, then video and audio chunks alternate, audio_eos, vision_eos
    media = ids[(ids == config.video_token_id) | (ids == config.audio_token_id)]
    switches = int((media[1:] != media[:-1]).sum())
    assert switches == 2 * 3 - 1  # 6 s = three 2-s windows of video then audio
    # and the model is told so: its TMRoPE positions put each window's video and audio at the same times
    assert inputs["use_audio_in_video"] is True
    _, _, layout = adapter_for(checkpoint.thinker).positions_and_layout(dict(inputs), inputs["attention_mask"], 2.0)
    assert layout.num_windows(0) == 3
    for window in range(3):
        in_window = layout.window[0] == window
        assert int((in_window & (layout.modality[0] == VIDEO)).sum()) == 48
        assert int((in_window & (layout.modality[0] == AUDIO)).sum()) == 50
    tokenizer = checkpoint.processor.tokenizer
    ending = tokenizer(QUESTION + "<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    assert ids[-len(ending):].tolist() == ending


def test_processor_inputs_run_pruned_and_match_the_reference(checkpoint):
    inputs = dict(video_question_inputs(checkpoint.processor, SHIPPED_CLIP, QUESTION, max_pixels=MAX_PIXELS))
    stats = assert_matches_reference(checkpoint.thinker, inputs, {"retention": 0.2, "inductor": False},
                                     dynamic=True)
    assert stats.input_counts["video"] == 144 and stats.input_counts["audio"] == 150


def test_too_long_audio_for_the_feature_extractor_is_refused(checkpoint, tmp_path):
    path = write_sample_clip(tmp_path / "long.mp4", SampleClipSpec(seconds=2))
    extractor = checkpoint.processor.feature_extractor
    saved = extractor.n_samples
    extractor.n_samples = 16000  # a 1 s window
    try:
        with pytest.raises(ValueError, match="longer than the feature extractor's window"):
            video_question_inputs(checkpoint.processor, path, QUESTION)
    finally:
        extractor.n_samples = saved


def _saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    assert files, f"no safetensors files in {directory}"
    return {name: tensor for path in files for name, tensor in load_file(path).items()}


def _loaded_name(saved_name: str) -> str:
    """thinker.<part>.* in a released-layout file -> the thinker's state_dict name."""
    name = saved_name[len("thinker."):]
    if name.startswith("model."):
        return "model.language_model." + name[len("model."):]
    if name.startswith(("audio_tower.", "visual.")):
        return "model." + name
    return name


def test_a_full_checkpoint_loads_its_thinker_without_the_talker(tmp_path):
    directory = save_tiny_checkpoint(tmp_path / "full", full_model=True)
    loaded = load_checkpoint(directory)
    assert type(loaded.thinker).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    # every thinker weight is the saved one, and every saved thinker weight was loaded (a wrong prefix would
    # leave random initial values in place: no error, finite logits). The file keeps the released layout
    # (thinker.model.* is the text model); transformers 5 holds it as model.language_model.*
    saved = {_loaded_name(name): tensor for name, tensor in _saved_tensors(directory).items()
             if name.startswith("thinker.")}
    state = loaded.thinker.state_dict()
    assert set(state) == set(saved), (sorted(set(state) - set(saved))[:5], sorted(set(saved) - set(state))[:5])
    for name, tensor in state.items():
        assert torch.equal(tensor, saved[name]), f"{name} differs from the saved weight"
    inputs = video_question_inputs(loaded.processor, SHIPPED_CLIP, QUESTION, max_pixels=MAX_PIXELS)
    with torch.no_grad():
        assert torch.isfinite(loaded.thinker(**inputs).logits).all()


def test_a_directory_without_a_qwen_omni_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not a Qwen-Omni model"):
        load_checkpoint(tmp_path)


# ---- the CLI ----------------------------------------------------------------------------------------
CLI_ARGS = ["--video", str(SHIPPED_CLIP), "--prompt", QUESTION, "--max-new-tokens", "3",
            "--max-pixels", str(MAX_PIXELS), "--retention", "0.2", "--option", "inductor=false"]


def test_cli_run_prints_an_answer_and_the_kept_tokens(checkpoint_dir, capsys, caplog):
    caplog.set_level(logging.INFO, logger="seats_fx")
    assert main(["run", "--model", str(checkpoint_dir), *CLI_ARGS]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("answer: ")
    table = {line.split()[0] + (" " + line.split()[1] if line.startswith("stage") else ""): line.split()[-3:]
             for line in lines if line.startswith(("input", "stage1", "stage2", "stage3"))}
    prompt_tokens = int(next(line for line in lines if line.startswith("kept tokens (")).split("(")[1].split()[0])
    text = str(prompt_tokens - 144 - 150)
    assert table["input"] == [text, "144", "150"]
    assert table["stage3 after"] == [text, "0", "0"]
    assert "reading and encoding the video" in captured.err and "compile, pruned prefill, decode" in captured.err
    # the thinker's helper graphs (transformers' vision_utils after a graph break) are not taken for a foreign model
    assert not [r for r in caplog.records if "not a Qwen-Omni thinker graph" in r.getMessage()]


def test_cli_report_writes_plots_and_a_summary(checkpoint_dir, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "report"
    assert main(["report", "--model", str(checkpoint_dir), *CLI_ARGS, "--out", str(out), "--quiet"]) == 0
    for name in ("kept_per_window.png", "tokens_per_layer.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] >= 300 and image.shape[1] >= 500, (name, image.shape)
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    summary = (out / "summary.md").read_text()
    assert "| input | " in summary and " | 144 | 150 |" in summary
    assert "| stage1 before LLM |" in summary and "![tokens per layer](tokens_per_layer.png)" in summary
    # per-window cells add up to the stage's counts
    input_row = next(line for line in summary.splitlines() if line.startswith("| input |") and "/" in line)
    cells = [cell.strip().split(" / ") for cell in input_row.strip("|").split("|")[1:]]
    assert sum(int(v) for v, _ in cells) == 144 and sum(int(a) for _, a in cells) == 150


def test_cli_rejects_bad_options_before_loading(checkpoint_dir, capsys):
    # one line and exit code 2 (tests/test_cli.py: every other error path)
    assert main(["run", "--model", str(checkpoint_dir), "--video", str(SHIPPED_CLIP), "--prompt", "x",
                 "--retention", "1.5"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "retention" in error and "1.5" in error, error


def test_cli_writes_a_sample_clip_and_a_tiny_checkpoint(tmp_path, capsys):
    assert main(["sample-clip", str(tmp_path / "c.mp4"), "--seconds", "2"]) == 0
    assert read_video_frames(tmp_path / "c.mp4").shape[0] == 4
    assert main(["tiny-checkpoint", str(tmp_path / "ck")]) == 0
    assert load_checkpoint(tmp_path / "ck").family == "qwen2_5_omni"


@pytest.mark.skipif(torchvision_available(), reason="the stand-in video processor is used only without torchvision")
def test_qwen3_processor_without_torchvision_says_what_it_needs():
    from transformers import WhisperFeatureExtractor

    with pytest.raises(ImportError, match="needs torchvision"):
        build_processor("qwen3_omni_moe", tiny_tokenizer(), WhisperFeatureExtractor(feature_size=128), {})


def test_answering_with_other_options_than_the_thinker_was_compiled_with_is_refused(checkpoint_dir):
    from seats_fx import SeatsBackend
    from seats_fx.answer import answer_video_question

    loaded = load_checkpoint(checkpoint_dir)
    loaded.thinker.seats_backend = SeatsBackend({"retention": 0.3})  # as seats_fx.compile leaves it
    with pytest.raises(ValueError, match="already compiled with other seats options"):
        answer_video_question(loaded, SHIPPED_CLIP, QUESTION, {"retention": 0.1}, max_new_tokens=1,
                              max_pixels=MAX_PIXELS)
