"""Trains the tiny Qwen2.5-Omni thinker (encoders included) on the needle task and saves it with save_pretrained.

Every step draws fresh clips (batch seed = --seed * 1_000_000 + step), so no clip repeats and the held-out
clips of the benchmark (other seeds) are never seen. The loss is the cross-entropy of the answer token at the
last prompt position. Training starts on easier clips (a curriculum of larger needles, see DEFAULT_CURRICULUM)
and ends on the task itself. The run is deterministic for a given command and thread count (fixed seeds, CPU).
The log records the command, wall time, `uptime` load averages at start and end, and held-out accuracy with
the clip's own media, blank media, another clip's media and no media at all.

Usage: python -m bench.train_needle [--out bench/checkpoints/needle_qwen2_5_omni]   (the committed checkpoint:
the defaults, about 10 min of CPU time with 1 thread)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from bench.needle_task import NeedleSpec, needle_batch, needle_config, select_clips

CHECKPOINT = Path("bench/checkpoints/needle_qwen2_5_omni")
VALIDATION_SEED = 900_000_001  # held-out clips for the log; the benchmark uses other seeds
# A one-token needle among ~200 tokens gives almost no gradient while attention is uniform: trained on the task
# directly the model stayed at chance for 400 steps. Large needles first (the whole window coloured, a 2 s
# tone), shrinking to the task's size, teach it where to look; the last 300 steps are the task itself.
DEFAULT_CURRICULUM = "1:16:200:150,1:8:100:100,1:4:60:100,2:2:40:150"


def load_averages() -> str:
    """Returns the 1/5/15-minute load averages as `uptime` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Returns the learning rate of a linear warm-up then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def spec_at(step: int, curriculum: list[tuple[NeedleSpec, int]], spec: NeedleSpec) -> NeedleSpec:
    """Returns the task of a step: the curriculum's stages (task, steps) in order, then `spec`."""
    for stage_spec, stage_steps in curriculum:
        if step < stage_steps:
            return stage_spec
        step -= stage_steps
    return spec


def parse_curriculum(text: str) -> list[tuple[NeedleSpec, int]]:
    """Parses stages WINDOWS:NEEDLE_CELLS:TONE_FRAMES:STEPS separated by commas ("1:16:200:150" is 150 steps of
    1-window clips whose coloured needle fills all 16 video cells of its window and whose tone lasts 2 s);
    "" is none."""
    stages = []
    for part in filter(None, text.split(",")):
        windows, cells, frames, steps = (int(x) for x in part.split(":"))
        stages.append((replace(NeedleSpec(), windows=windows, needle_cells=cells, tone_frames=frames), steps))
    return stages


@torch.no_grad()
def accuracy(model, inputs: dict, answers: torch.Tensor, chunk: int = 64) -> float:
    """Returns the fraction of clips whose highest-scoring next token is the answer."""
    correct = 0
    count = answers.shape[0]
    for first in range(0, count, chunk):
        rows = list(range(first, min(count, first + chunk)))
        logits = model(**select_clips(inputs, rows)).logits[:, -1]
        correct += int((logits.argmax(-1) == answers[rows]).sum())
    return correct / count


def held_out_accuracies(model, config, spec: NeedleSpec, clips: int) -> dict[str, float]:
    """Returns accuracy on held-out clips with their own media, blank media, shuffled media and no media."""
    model.eval()
    results = {}
    for media in ("real", "blank", "shuffled", "none"):
        batch = needle_batch(config, spec, VALIDATION_SEED, clips, media)
        results[media] = accuracy(model, batch.inputs, batch.answers)
    model.train()
    return results


def train(args: argparse.Namespace, log) -> tuple[torch.nn.Module, dict]:
    spec = NeedleSpec()
    config = needle_config()
    torch.manual_seed(args.seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.train()
    curriculum = parse_curriculum(args.curriculum)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  betas=(0.9, 0.98))
    started, cpu_started = time.time(), time.process_time()
    running_loss, running_correct, running_count = 0.0, 0, 0
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        batch = needle_batch(config, spec_at(step, curriculum, spec), args.seed * 1_000_000 + step, args.batch)
        logits = model(**batch.inputs).logits[:, -1]
        loss = F.cross_entropy(logits, batch.answers)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running_loss += float(loss.detach()) * args.batch
        running_correct += int((logits.argmax(-1) == batch.answers).sum())
        running_count += args.batch
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log(f"step {step + 1:5d}  loss {running_loss / running_count:.4f}  train acc "
                f"{running_correct / running_count:.3f}  lr {optimizer.param_groups[0]['lr']:.2e}  "
                f"wall {time.time() - started:6.0f} s  cpu {time.process_time() - cpu_started:6.0f} s  "
                f"load {load_averages()}")
            running_loss, running_correct, running_count = 0.0, 0, 0
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            log(f"  held-out ({args.eval_clips} clips): {held_out_accuracies(model, config, spec, args.eval_clips)}")
    seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    return model, {"train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "spec": asdict(spec)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curriculum", default=DEFAULT_CURRICULUM,
                        help="easier clips first: WINDOWS:NEEDLE_CELLS:TONE_FRAMES:STEPS,... then the task itself")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine a second thread mostly waits)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=0, help="held-out accuracy every N steps (0: at the end)")
    parser.add_argument("--eval-clips", type=int, default=512)
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    arguments = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python -m bench.train_needle", *(shlex.quote(a) for a in arguments)])
    log(f"command: {command}")
    log(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), python {platform.python_version()}")
    log(f"load averages at start (1/5/15 min): {load_averages()}")
    model, record = train(args, log)
    log(f"load averages at end (1/5/15 min): {load_averages()}")
    log(f"training wall time: {record['train_seconds']:.1f} s ({record['train_seconds'] / 60:.1f} min), "
        f"{args.steps} steps x {args.batch} clips; CPU time of this process: {record['train_cpu_seconds']:.1f} s "
        f"({record['train_cpu_seconds'] / 60:.1f} min; wall time beyond it is waiting for a core)")
    spec = NeedleSpec()
    accuracies = held_out_accuracies(model, needle_config(), spec, args.eval_clips)
    log(f"held-out accuracy ({args.eval_clips} clips, seed {VALIDATION_SEED}; chance {1 / spec.values:.3f}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()))
    model.eval()
    model.save_pretrained(args.out)
    record.update(command=command, args={k: str(v) for k, v in vars(args).items()}, held_out=accuracies)
    (args.out / "needle_task.json").write_text(json.dumps(record, indent=2))
    (args.out / "train_log.txt").write_text("\n".join(lines) + "\n")
    log(f"saved {args.out}")
    return record


if __name__ == "__main__":
    main()
