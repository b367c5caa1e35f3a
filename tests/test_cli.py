"""The CLI's error paths: a mistake in the command line or in a file it names ends with exactly one line on
stderr that names what was expected and what was found, exit code 2, and no traceback; none of them loads a
model (each fails in well under a second after the imports)."""

import subprocess
import sys
from pathlib import Path

import pytest

from seats_fx.__main__ import main

CLIP = Path(__file__).parent / "data" / "shapes_and_tones.mp4"


@pytest.fixture
def dirs(tmp_path):
    """A checkpoint directory that passes the config check (no weights), and other wrong things to point at."""
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "qwen2_5_omni_thinker"}')
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text('{"model_type": "llama"}')
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": ')
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    return {"ckpt": checkpoint, "llama": llama, "broken": broken, "empty": empty, "text": text, "tmp": tmp_path}


def run_args(model, video=CLIP, *extra):
    return ["run", "--model", str(model), "--video", str(video), "--prompt", "What moves?", "--quiet", *extra]


CASES = {
    # options: checked first (here nothing else exists either): the fastest mistake to fix is named first
    "retention-above-1": (lambda d: run_args(d["tmp"] / "nothing", "nothing.mp4", "--retention", "1.5"),
                          ["retention", "(0, 1]", "1.5"]),
    "unknown-option": (lambda d: run_args(d["ckpt"], CLIP, "--option", "retension=0.1"),
                       ["unknown seats option", "retension", "known options"]),
    "option-without-value": (lambda d: run_args(d["ckpt"], CLIP, "--option", "stage3"), ["name=value", "stage3"]),
    "option-out-of-range": (lambda d: run_args(d["ckpt"], CLIP, "--option", "late_block_layer=1"),
                            ["late_block_layer", ">= 2", "1"]),
    "fps-zero": (lambda d: run_args(d["ckpt"], CLIP, "--fps", "0"), ["--fps", "> 0", "0"]),
    "fps-nan": (lambda d: run_args(d["ckpt"], CLIP, "--fps", "nan"), ["--fps", "> 0", "nan"]),
    "tokens-zero": (lambda d: run_args(d["ckpt"], CLIP, "--max-new-tokens", "0"), ["--max-new-tokens", ">= 1", "0"]),
    "tokens-not-int": (lambda d: run_args(d["ckpt"], CLIP, "--max-new-tokens", "ten"),
                       ["--max-new-tokens", "integer", "ten"]),
    "pixels-negative": (lambda d: run_args(d["ckpt"], CLIP, "--max-pixels", "-5"), ["--max-pixels", ">= 1", "-5"]),
    "retention-not-number": (lambda d: run_args(d["ckpt"], CLIP, "--retention", "most"), ["--retention", "most"]),
    "missing-prompt": (lambda d: ["run", "--model", str(d["ckpt"]), "--video", str(CLIP)], ["--prompt", "required"]),
    "unknown-command": (lambda d: ["prune"], ["invalid choice", "prune", "run"]),
    "unknown-flag": (lambda d: run_args(d["ckpt"], CLIP, "--retension", "0.1"), ["unrecognized", "--retension"]),
    # the checkpoint directory
    "model-missing": (lambda d: run_args(d["tmp"] / "nothing"), ["--model", "checkpoint directory", "nothing"]),
    "model-is-a-file": (lambda d: run_args(d["text"]), ["--model", "checkpoint directory", "a file"]),
    "model-without-config": (lambda d: run_args(d["empty"]), ["--model", "no config.json"]),
    "model-not-qwen-omni": (lambda d: run_args(d["llama"]), ["not a Qwen-Omni model", "'llama'"]),
    "model-config-not-json": (lambda d: run_args(d["broken"]), ["--model", "config.json", "broken"]),
    "model-without-weights": (lambda d: run_args(d["ckpt"]), ["cannot load the checkpoint", "model.safetensors"]),
    # the video file
    "video-missing": (lambda d: run_args(d["ckpt"], d["tmp"] / "none.mp4"), ["--video", "video file", "nothing"]),
    "video-is-a-directory": (lambda d: run_args(d["ckpt"], d["tmp"]), ["--video", "video file", "a directory"]),
    "video-not-a-video": (lambda d: run_args(d["ckpt"], d["text"]), ["--video", "not a readable video"]),
    # the other commands
    "report-out-is-a-file": (lambda d: ["report", *run_args(d["ckpt"])[1:], "--out", str(d["text"])],
                             ["--out", "directory", "a file"]),
    "clip-seconds-zero": (lambda d: ["sample-clip", str(d["tmp"] / "c.mp4"), "--seconds", "0"],
                          ["--seconds", ">= 1", "0"]),
    "clip-into-a-directory": (lambda d: ["sample-clip", str(d["tmp"])], ["file path", "a directory"]),
    "checkpoint-over-a-file": (lambda d: ["tiny-checkpoint", str(d["text"])], ["directory", "a file"]),
    "demo-retention": (lambda d: ["demo", "--retention", "2"], ["retention", "(0, 1]", "2"]),
    "demo-seconds": (lambda d: ["demo", "--seconds", "-1"], ["--seconds", ">= 1"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_errors_are_one_line_and_exit_code_2(name, dirs, capsys):
    build, words = CASES[name]
    code = main(build(dirs))
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seats-fx: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.slow  # a fresh interpreter imports torch and transformers (several seconds)
def test_the_installed_entry_point_exits_with_2_and_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "seats_fx", "sample-clip", str(tmp_path), "--seconds", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("seats-fx")]
    assert errors == [f"seats-fx: error: sample-clip {tmp_path}: expected a file path for the .mp4, found a directory"]
    assert "Traceback" not in done.stderr
