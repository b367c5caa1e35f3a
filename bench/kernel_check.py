"""Kernel check: the four selection kernels (seats_fx/ops/triton_kernels.py), compiled for the GPU, against
the torch implementations they stand in for, on random cases with the ties the selection meets; then each
kernel's time against its torch ops at prefill sizes of a 60 s clip.

The tests run the kernels under triton's interpreter on CPU; compiled code on a real GPU is another program
(other instructions, other float contraction), so this script is the device-side proof. Exact ops
(greedy picks, budgets, top-per-slot positions) must be equal; query_relevance's scores are compared within
float32 rounding and by the tokens a stage-2 step keeps from them. About a minute on one H100.

Usage: python -m bench.kernel_check [--cases 200] [--json bench/results/kernel_check.json]
  Without CUDA it runs the kernels under TRITON_INTERPRET=1 on CPU (few cases, no timings): proves the script.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

from bench.measure import write_json

ALWAYS = 2 ** 62


def _exact(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and torch.equal(got.cpu(), expected.cpu())


def greedy_case(gen: torch.Generator, device: torch.device):
    from seats_fx.ops.diversity import greedy_max_min_torch, weighted_cosine_distance

    groups, n, dim = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(2, 400, (1,), generator=gen)), 64
    embeds = torch.randn(groups, n, dim, generator=gen)
    copies = n // 4  # repeated frames: the ties the distance grid decides
    embeds[:, copies:2 * copies] = embeds[:, :copies] + 1e-7 * torch.randn(groups, copies, dim, generator=gen)
    distance = weighted_cosine_distance(embeds, torch.rand(groups, n, generator=gen)).to(device)
    k = int(torch.randint(1, n, (1,), generator=gen))
    return (distance, k), lambda kernels: kernels.greedy_max_min(distance, k), \
        lambda: greedy_max_min_torch(distance, k)


def budgets_case(gen: torch.Generator, device: torch.device):
    from seats_fx.ops.budget import window_budgets_torch

    windows = int(torch.randint(1, 60, (1,), generator=gen))
    counts = torch.randint(0, 40, (2, windows), generator=gen).double()
    counts[0, 0] += 1
    sums = torch.rand(2, windows, generator=gen, dtype=torch.float64) * counts
    video_keep = int(torch.randint(1, int(counts[0].sum()) + 1, (1,), generator=gen))
    audio_keep = int(torch.randint(0, int(counts[1].sum()) + 1, (1,), generator=gen))
    case = (sums.to(device), counts.to(device), video_keep, audio_keep,
            min(video_keep + audio_keep, int(counts.sum())), 0.1)
    return case, lambda kernels: kernels.window_budgets(*case), lambda: window_budgets_torch(*case)


def top_per_slot_case(gen: torch.Generator, device: torch.device):
    from seats_fx.ops.budget import top_per_slot_torch

    length, slots = int(torch.randint(1, 3000, (1,), generator=gen)), int(torch.randint(1, 40, (1,), generator=gen))
    scores = torch.randint(0, 6, (length,), generator=gen).float() / 8 if bool(torch.rand(1, generator=gen) < 0.5) \
        else torch.rand(length, generator=gen)
    scores[torch.rand(length, generator=gen) < 0.1] = -0.0
    slot = torch.randint(0, slots, (length,), generator=gen)
    sizes = torch.bincount(slot, minlength=slots)
    limits = (torch.rand(slots, generator=gen) * (sizes + 2)).long()
    limits[0] = ALWAYS
    count = int(torch.minimum(sizes, limits).sum())
    case = (scores.to(device), slot.to(device), limits.to(device), count)
    return case, lambda kernels: kernels.top_per_slot(*case), lambda: top_per_slot_torch(*case)


def relevance_case(gen: torch.Generator, device: torch.device):
    from seats_fx.ops.relevance import text_query_relevance

    heads, kv_heads, dim = 28, 4, 128  # the 7B decoder's attention
    length = int(torch.randint(1, 4000, (1,), generator=gen))
    query = torch.randn(1, heads, 1, dim, generator=gen).to(device, torch.bfloat16)
    keys = torch.randn(1, kv_heads, length, dim, generator=gen).to(device, torch.bfloat16)
    return (query, keys), lambda kernels: kernels.query_relevance(query, keys, None, dim ** -0.5), \
        lambda: text_query_relevance(query, keys, None, dim ** -0.5)


EXACT = {"greedy_max_min": greedy_case, "window_budgets": budgets_case, "top_per_slot": top_per_slot_case}


def check(cases: int, device: torch.device, log=print) -> dict:
    """Returns per kernel: cases run, cases that differ from the torch implementation (and the first)."""
    from seats_fx.ops import triton_kernels

    kernels = triton_kernels
    result = {}
    for name, make in [*EXACT.items(), ("query_relevance", relevance_case)]:
        gen = torch.Generator().manual_seed(0)
        differ, first, worst = 0, None, 0.0
        for index in range(cases):
            _, kernel, reference = make(gen, device)
            got, expected = kernel(kernels), reference()
            if name == "query_relevance":
                worst = max(worst, float((got.float() - expected.float()).abs().max()))
                same = torch.allclose(got.float(), expected.float(), rtol=2e-5, atol=1e-7)
            else:
                same = _exact(got, expected)
            if not same:
                differ += 1
                first = first if first is not None else index
        result[name] = {"cases": cases, "differ": differ, "first_differing_case": first}
        if name == "query_relevance":
            result[name]["max_abs_diff"] = worst
        log(f"{name:<16} {cases} cases, {differ} differ" + (f" (max |diff| {worst:.2e})" if worst else ""))
    return result


def timings(device: torch.device, log=print) -> dict:
    """Median ms of each kernel and of its torch ops at a 60 s clip's sizes (10,175 tokens, about 1,900 after
    stage 1; 10 windows x 2 modalities of ~500 tokens for stage 1)."""
    from bench.measure import timed_runs
    from seats_fx.ops import triton_kernels as kernels
    from seats_fx.ops.budget import top_per_slot_torch, window_budgets_torch
    from seats_fx.ops.diversity import greedy_max_min_torch, weighted_cosine_distance
    from seats_fx.ops.relevance import text_query_relevance

    gen = torch.Generator().manual_seed(1)
    distance = weighted_cosine_distance(torch.randn(20, 500, 64, generator=gen), torch.rand(20, 500, generator=gen))
    distance = distance.to(device)
    scores, slot = torch.rand(1900, generator=gen).to(device), torch.randint(0, 22, (1900,), generator=gen).to(device)
    limits = torch.full((22,), 30, dtype=torch.long).to(device)
    count = int(torch.minimum(torch.bincount(slot.cpu(), minlength=22), limits.cpu()).sum())
    counts = torch.randint(20, 60, (2, 30), generator=gen).double().to(device)
    sums = counts * torch.rand(2, 30, generator=gen, dtype=torch.float64).to(device)
    query = torch.randn(1, 28, 1, 128, generator=gen).to(device, torch.bfloat16)
    keys = torch.randn(1, 4, 1900, 128, generator=gen).to(device, torch.bfloat16)
    pairs = {
        "greedy_max_min": (lambda: kernels.greedy_max_min(distance, 50), lambda: greedy_max_min_torch(distance, 50)),
        "top_per_slot": (lambda: kernels.top_per_slot(scores, slot, limits, count),
                         lambda: top_per_slot_torch(scores, slot, limits, count)),
        "window_budgets": (lambda: kernels.window_budgets(sums, counts, 300, 200, 500, 0.1),
                           lambda: window_budgets_torch(sums, counts, 300, 200, 500, 0.1)),
        "query_relevance": (lambda: kernels.query_relevance(query, keys, None, 128 ** -0.5),
                            lambda: text_query_relevance(query, keys, None, 128 ** -0.5)),
    }
    result = {}
    for name, (kernel, ops) in pairs.items():
        kernel(), ops()  # warm-up (the kernel's first call compiles it)
        kernel_ms, ops_ms = (1000 * timed_runs(run, 20, device).median_s for run in (kernel, ops))
        result[name] = {"kernel_ms": kernel_ms, "torch_ops_ms": ops_ms}
        log(f"{name:<16} kernel {kernel_ms:.3f} ms, torch ops {ops_ms:.3f} ms")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=None, help="random cases per kernel (200 on CUDA, 3 on CPU)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/kernel_check.json"))
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels module is loaded
    device = torch.device("cuda" if cuda else "cpu")
    cases = args.cases if args.cases is not None else (200 if cuda else 3)
    result = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()}), interpreted",
              "torch": torch.__version__, "python": sys.version.split()[0], "checks": check(cases, device)}
    if cuda:
        result["timings"] = timings(device)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
