"""Does bf16 flip SEATS's picks on a trained model, and does that cost answers? The trained needle thinker
(bench/checkpoints/needle_qwen2_5_omni) against the same architecture with random weights.

An H200 check found about a third of stage 1's kept positions differing between `seats_fx.compile` with
Inductor and the eager reference in bf16 (random weights); `bench.kept_drift` traced it to Inductor's bf16
rounding of the towers, not to the selection. Random features are nearly equidistant, so any rounding moves
a greedy max-min pick. This asks the question on a model whose features carry a task: per clip (batch 1,
held-out needle clips), SEATS at R through
- the eager reference in fp32 and in bf16 (`seats_forward`), and
- `seats_fx.compile` with Inductor in bf16 (the GPU path, on CPU),
and reports the accuracy of each, how often the compiled bf16 answer differs from the references', and how
many kept positions differ per selection (stage 1, each stage-2 step) between the compiled run and each
reference, and between the two references (what bf16 alone moves, eagerly), for the trained model and for
the same config with seed-0 random weights.

Usage: python -m bench.bf16_drift [--clips 128] [--retention 0.1] [--json bench/results/bf16_drift.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

import seats_fx
from bench.accuracy import BENCHMARK_SEED, CHECKPOINT, load_model
from bench.gpu_check import kept_against
from bench.needle_task import NeedleSpec, needle_batch
from seats_fx import last_stats
from seats_fx.reference import seats_forward


def _as(inputs: dict, dtype: torch.dtype) -> dict:
    """The clip's inputs with floating tensors (pixels, mel features) in `dtype`, as a bf16 pipeline feeds them."""
    return {key: value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value
            for key, value in inputs.items()}


def _differ(stage_positions: list[torch.Tensor], reference_stages: list) -> list[int]:
    """Per selection, how many positions only one of the two runs kept (a changed pick counts twice)."""
    rows = kept_against(stage_positions, reference_stages)
    if "mismatch" in rows[0]:
        raise RuntimeError(rows[0]["mismatch"])
    return [row["differ"] for row in rows]


def drift(model: Qwen2_5OmniThinkerForConditionalGeneration, clips: list[dict], answers: torch.Tensor,
          options: dict) -> dict:
    """Runs every clip through the fp32 and bf16 references and the compiled bf16 model; returns accuracies,
    answer disagreement and kept-position differences (mean and worst per selection)."""
    fp32, bf16 = copy.deepcopy(model).float().eval(), copy.deepcopy(model).to(torch.bfloat16).eval()
    picks = {"reference fp32": [], "reference bf16": [], "seats_fx.compile bf16": []}
    kept_bf16, kept_fp32, reference_bf16, reference_fp32, references = [], [], [], [], []
    with torch.inference_mode():
        for inputs in clips:
            ref32 = seats_forward(fp32, inputs, options)
            ref16 = seats_forward(bf16, _as(inputs, torch.bfloat16), options)
            picks["reference fp32"].append(int(ref32.last_logits[0].argmax()))
            picks["reference bf16"].append(int(ref16.last_logits[0].argmax()))
            reference_fp32.append(ref32.stages)
            reference_bf16.append(ref16.stages)
            references.append(_differ([s.kept_positions for s in ref16.stages], ref32.stages))
        stages = [(s.stage, s.after_layer) for s in ref16.stages]
        seats_fx.compile(bf16, dict(options, inductor=True))
        started = time.perf_counter()
        for index, inputs in enumerate(clips):
            logits = bf16(**_as(inputs, torch.bfloat16), logits_to_keep=1).logits
            stats = last_stats()
            if index == 0:
                first_call_s = time.perf_counter() - started
            if stats is None or not stats.pruned:
                raise RuntimeError(f"seats did not prune clip {index}: {None if stats is None else stats.skipped}")
            picks["seats_fx.compile bf16"].append(int(logits[0, -1].argmax()))
            kept_bf16.append(_differ(stats.stage_positions, reference_bf16[index]))
            kept_fp32.append(_differ(stats.stage_positions, reference_fp32[index]))
    kept_counts = [s.kept_positions.numel() for s in reference_bf16[0]]

    def summary(rows: list[list[int]]) -> list[dict]:
        return [{"stage": stage, "after_layer": after, "kept": kept,
                 "differ_mean": sum(r[i] for r in rows) / len(rows), "differ_max": max(r[i] for r in rows),
                 "clips_with_a_difference": sum(r[i] > 0 for r in rows)}
                for i, ((stage, after), kept) in enumerate(zip(stages, kept_counts))]

    compiled = torch.tensor(picks["seats_fx.compile bf16"])
    return {"accuracy": {name: float((torch.tensor(p) == answers).float().mean()) for name, p in picks.items()},
            "answers_differ_from_reference_bf16": int((compiled != torch.tensor(picks["reference bf16"])).sum()),
            "answers_differ_from_reference_fp32": int((compiled != torch.tensor(picks["reference fp32"])).sum()),
            "kept_vs_reference_bf16": summary(kept_bf16), "kept_vs_reference_fp32": summary(kept_fp32),
            "reference_bf16_kept_vs_reference_fp32": summary(references),
            "first_call_s": first_call_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--json", type=Path, default=Path("bench/results/bf16_drift.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    trained = load_model(args.checkpoint)
    spec = NeedleSpec()
    batch = needle_batch(trained.config, spec, BENCHMARK_SEED, args.clips)
    clips = [batch.sample(i) for i in range(args.clips)]
    options = {"retention": args.retention}
    torch.manual_seed(0)
    random = Qwen2_5OmniThinkerForConditionalGeneration(trained.config).eval()
    result = {"machine": platform.machine(), "torch": torch.__version__, "clips": args.clips,
              "retention": args.retention, "checkpoint": str(args.checkpoint)}
    for name, model in (("trained", trained), ("random weights", random)):
        torch._dynamo.reset()
        result[name] = drift(model, clips, batch.answers, options)
        print(name, json.dumps(result[name], indent=1))
    result["wall_s"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
