"""Cold compile time of backend="seats" against plain Inductor, at a real depth (28 layers, as Qwen2.5-Omni-7B).

Each variant compiles in a fresh process with an empty Inductor cache, so "cold" means cold: Dynamo tracing,
AOT, Inductor codegen and the C++ / Triton compiles all count. Prints a table and writes JSON.

    python -m bench.compile_time [--layers 28] [--seconds 4] [--out bench/results/compile_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("inductor", "seats")


def _one(variant: str, layers: int, seconds: int) -> dict:
    """Runs in the child process: builds the thinker, times the first call (compile + run) and a second."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from seats_fx import SeatsBackend
    from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
    from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=layers))).eval()
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds))
    backend = "inductor" if variant == "inductor" else SeatsBackend({"retention": 0.1})
    compiled = torch.compile(model, backend=backend, dynamic=True)
    with torch.no_grad():
        start = time.perf_counter()
        compiled(**inputs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        compiled(**inputs)
        second = time.perf_counter() - start
    from torch._dynamo.utils import counters

    # how much Inductor lowered cold and how much its FX graph cache served within this one run
    return {"variant": variant, "first_call_s": first, "steady_call_s": second, "compile_s": first - second,
            "dynamo_graphs": counters["stats"]["unique_graphs"],
            "fxgraph_cache_miss": counters["inductor"]["fxgraph_cache_miss"],
            "fxgraph_cache_hit": counters["inductor"]["fxgraph_cache_hit"]}


def measure(layers: int, seconds: int) -> list[dict]:
    rows = []
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
            out = subprocess.run([sys.executable, "-m", "bench.compile_time", "--child", variant, "--layers", str(layers),
                                  "--seconds", str(seconds)], env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "compile_time.json")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args.child, args.layers, args.seconds)))
        return {}
    rows = measure(args.layers, args.seconds)
    by = {row["variant"]: row for row in rows}
    ratio = by["seats"]["compile_s"] / by["inductor"]["compile_s"]
    load = os.getloadavg()
    result = {"layers": args.layers, "seconds": args.seconds, "rows": rows, "seats_over_inductor": ratio,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_average": load}
    print(f"cold compile, {args.layers}-layer tiny thinker, {args.seconds} s clip (load {load[0]:.1f}):")
    for row in rows:
        print(f"  {row['variant']:<9} first call {row['first_call_s']:7.1f} s   steady {row['steady_call_s']:6.2f} s   "
              f"compile {row['compile_s']:7.1f} s   Inductor graphs {row['fxgraph_cache_miss']} compiled, "
              f"{row['fxgraph_cache_hit']} from cache")
    print(f"  seats / inductor compile time: {ratio:.2f}x (target <= 1.5x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
