"""The CLI's commands other than `demo`: run, report, sample-clip, tiny-checkpoint, and how the CLI reports a
mistake in its command line or in the files it names (UsageError: one line on stderr, exit code 2)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from seats_fx.progress import Progress


class UsageError(Exception):
    """A mistake in the command line or in a file it names; the CLI prints it on one line and exits with 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors (one line, no usage block); subparsers inherit it."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_option(text: str) -> tuple[str, object]:
    """'name=value' -> (name, value); the value is read as JSON when it parses (numbers, true, [16, 18])."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"an option is name=value, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def check_options(options: dict) -> None:
    """Raises UsageError unless `options` make a valid SeatsConfig (before minutes of loading)."""
    from seats_fx.config import SeatsConfig

    try:
        SeatsConfig.from_options(options)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_checkpoint_dir(directory: str) -> None:
    from seats_fx.checkpoint import checkpoint_model_type

    if not Path(directory).is_dir():
        raise UsageError(f"--model {directory}: expected a checkpoint directory, found "
                         f"{'a file' if Path(directory).exists() else 'nothing'}")
    try:
        checkpoint_model_type(directory)
    except json.JSONDecodeError as error:
        raise UsageError(f"--model {directory}: config.json is not valid JSON ({error})") from None
    except (OSError, ValueError) as error:  # no config.json, not a Qwen-Omni model
        raise UsageError(f"--model {directory}: {error}") from None


def _check_video_file(path: str) -> None:
    from seats_fx.media.decode import video_duration_seconds

    if not Path(path).is_file():
        raise UsageError(f"--video {path}: expected a video file, found "
                         f"{'a directory' if Path(path).exists() else 'nothing'}")
    try:
        video_duration_seconds(path)
    except Exception as error:  # PyAV's errors for files it cannot open or without a video stream
        raise UsageError(f"--video {path}: not a readable video ({type(error).__name__}: {error})") from None


def _check_writable_dir(flag: str, path: str) -> None:
    if Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{flag} {path}: expected a directory to write into, found a file")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (released Qwen-Omni or tiny)")
    parser.add_argument("--video", required=True, help="video file; its audio track is used when present")
    parser.add_argument("--prompt", required=True, help="the question about the video")
    parser.add_argument("--retention", type=float, default=None,
                        help="share of video and audio tokens kept (default: SeatsConfig's, 0.1)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32)
    parser.add_argument("--fps", type=positive_float, default=2.0, help="frames sampled per second (default 2)")
    parser.add_argument("--max-pixels", type=positive_int, default=None,
                        help="cap on pixels per frame (default: processor's)")
    parser.add_argument("--option", action="append", type=parse_option, default=[], metavar="NAME=VALUE",
                        help="any SeatsConfig option, e.g. --option stage3=false --option inductor=false")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _options(args) -> dict:
    options = dict(args.option)
    if args.retention is not None:
        options["retention"] = args.retention
    return options


def _quiet_dynamo() -> None:
    # Dynamo warns once per graph break (transformers' .item() calls); the CLI's reader cannot act on them
    import torch

    torch._logging.set_logs(dynamo=logging.ERROR)


def _answer(args):
    from seats_fx.answer import answer_video_question
    from seats_fx.checkpoint import load_checkpoint

    options = _options(args)
    # every mistake the command line can hold fails here, before minutes of loading
    check_options(options)
    _check_checkpoint_dir(args.model)
    _check_video_file(args.video)
    if getattr(args, "out", None) is not None:
        _check_writable_dir("--out", args.out)
    progress = Progress(enabled=not args.quiet)
    _quiet_dynamo()
    with progress.step(f"loading {args.model}"):
        try:
            checkpoint = load_checkpoint(args.model)
        except (OSError, ValueError) as error:  # e.g. weights missing or not matching the config
            raise UsageError(f"--model {args.model}: cannot load the checkpoint ({type(error).__name__}: "
                             f"{error})") from None
    answer = answer_video_question(checkpoint, args.video, args.prompt, options, args.max_new_tokens,
                                   fps=args.fps, max_pixels=args.max_pixels, progress=progress)
    return checkpoint, answer


def run(args) -> int:
    from seats_fx.selection_report import stage_rows, stage_table

    _, answer = _answer(args)
    print(f"answer: {answer.text}")
    print("")
    if answer.skipped:
        print(f"seats did not prune this prompt: {answer.skipped}")
        return 0
    rows = stage_rows(answer.stats, answer.layout)
    print(f"kept tokens ({answer.prompt_tokens} prompt tokens; retention video {answer.config.video_retention}, "
          f"audio {answer.config.audio_retention}):")
    print(stage_table(rows))
    print(f"tokens processed, averaged over layers: video {answer.stats.mean_fraction('video'):.3f}, "
          f"audio {answer.stats.mean_fraction('audio'):.3f} of the input")
    return 0


def report(args) -> int:
    from seats_fx.selection_report import write_report

    checkpoint, answer = _answer(args)
    if answer.skipped:
        print(f"seats did not prune this prompt, nothing to report: {answer.skipped}", file=sys.stderr)
        return 1
    header = {"model": f"{args.model} ({checkpoint.family})", "video": args.video, "prompt": args.prompt,
              "options": json.dumps(answer.config.to_dict()), "prompt tokens": str(answer.prompt_tokens),
              "answer": answer.text}
    paths = write_report(args.out, answer.stats, answer.layout, header)
    for path in paths.values():
        print(path)
    return 0


def sample_clip(args) -> int:
    from seats_fx.media.sample_clip import SampleClipSpec, write_sample_clip

    if Path(args.out).is_dir():
        raise UsageError(f"sample-clip {args.out}: expected a file path for the .mp4, found a directory")
    print(write_sample_clip(args.out, SampleClipSpec(seconds=args.seconds)))
    return 0


def tiny_checkpoint(args) -> int:
    from seats_fx.models.tiny_checkpoint import save_tiny_checkpoint

    _check_writable_dir("tiny-checkpoint", args.out)
    print(save_tiny_checkpoint(args.out, full_model=args.full))
    return 0


def add_commands(commands) -> None:
    """Adds run, report, sample-clip and tiny-checkpoint to an argparse subparsers object."""
    run_parser = commands.add_parser("run", help="answer a question about a video with a checkpoint, pruned by seats")
    add_run_arguments(run_parser)
    run_parser.set_defaults(handler=run)
    report_parser = commands.add_parser("report", help="like run, then write PNG plots and a Markdown summary "
                                                       "of what seats kept")
    add_run_arguments(report_parser)
    report_parser.add_argument("--out", default="seats-report", help="output directory (default seats-report)")
    report_parser.set_defaults(handler=report)
    clip_parser = commands.add_parser("sample-clip", help="write the sample clip (moving shapes, tones) to a file")
    clip_parser.add_argument("out", help="output .mp4 path")
    clip_parser.add_argument("--seconds", type=positive_int, default=6)
    clip_parser.set_defaults(handler=sample_clip)
    tiny_parser = commands.add_parser("tiny-checkpoint", help="save a tiny random-weight Qwen2.5-Omni checkpoint "
                                                              "(model, tokenizer, processor settings)")
    tiny_parser.add_argument("out", help="output directory")
    tiny_parser.add_argument("--full", action="store_true", help="thinker + talker + token2wav, as released ones")
    tiny_parser.set_defaults(handler=tiny_checkpoint)
