"""Prefill wall time at real width: plain eager, plain Inductor, the eager SEATS reference and
backend="seats", in one process; selection share, compile times, recompiles over 10 lengths, peak memory;
host reads and ops of the seats glue (seats_fx.host_reads), and on CUDA kernel launches and host syncs
(torch.profiler), the encoder / LLM split and the selection's GPU time (bench.gpu_check's helpers).

The model is a Qwen2.5-Omni thinker whose decoder has the 3B widths (hidden 2048, MLP 11008, 16 heads,
2 KV heads) and truncated depth, with small random-weight encoders (the encoders are not pruned, and
their real sizes would dominate a CPU run). The clip is 16 s of 448x252 video at 2 fps with its audio.
Logits are computed for the last position only (logits_to_keep=1), as generate()'s prefill does.
Usage: python -m bench.prefill [--layers 6] [--seconds 16] [--repeats 3] [--no-sweep | --sweep-only]
       [--json bench/results/prefill.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from bench.gpu_check import GlueTimer, launches_and_syncs
from bench.gpu_check import _encoders as encoder_call
from bench.measure import first_call_seconds, peak_added_mib, timed_runs, write_json
import seats_fx
from bench.methods import METHODS
from seats_fx import SeatsBackend, last_stats
from seats_fx.config import SeatsConfig
from seats_fx.host_reads import counting_glue, total
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import seats_forward

RETENTIONS = (0.1, 0.2, 0.3)
SWEEP_SECONDS = (4, 6, 8, 10, 12, 14, 16, 18, 20, 22)  # the 10 video lengths of the recompile count


def build(layers: int, device: torch.device):
    spec = TinySpec(vocab_size=8192, hidden_size=2048, num_layers=layers, num_heads=16, num_kv_heads=2,
                    intermediate_size=11008, vision_depth=2, vision_hidden=64, audio_layers=2, audio_hidden=64)
    torch.manual_seed(0)
    return Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(spec)).eval().to(device)


def clip_inputs(model, seconds: int, device: torch.device, seed: int = 0) -> dict:
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, height=252, width=448, seed=seed))
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def fresh_compile_caches() -> None:
    """Makes the next compile cold: no FX-graph or kernel cache from earlier compiles. Dynamo keeps the
    earlier backend's entries (its backend guard never serves them to another backend), so compiled
    wrappers stay usable for the memory runs at the end."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="seats-bench-inductor-")
    torch._inductor.config.fx_graph_cache = False


def recompile_sweep(model, device: torch.device, options: dict, log=print) -> list[dict]:
    """Counts compiles over 10 video lengths after the first: for backend="seats" (torch.compile, dynamic=True),
    for seats_fx.compile (on a copy of the model: it switches the towers and rope index in place) and for the
    unpruned model under Dynamo's own "eager" backend. How many graphs Dynamo traces does not depend on the
    lowering, so all lower eagerly here (Inductor would add minutes of compiling, not compiles)."""
    from torch._dynamo.utils import counters

    log(f"recompiles over {len(SWEEP_SECONDS)} video lengths (dynamic=True) ...")
    rows = []
    for name in ("seats", "seats_fx.compile", "plain (Dynamo eager backend)"):
        torch._dynamo.reset()
        if name == "seats":
            backend = SeatsBackend(dict(options, inductor=False))
            compiled = torch.compile(model, backend=backend, dynamic=True)
        elif name == "seats_fx.compile":
            compiled = seats_fx.compile(copy.deepcopy(model), dict(options, inductor=False))
            backend = compiled.seats_backend
        else:
            backend, compiled = None, torch.compile(model, backend="eager", dynamic=True)
        for seconds in SWEEP_SECONDS:
            graphs_before = counters["stats"]["unique_graphs"]
            inputs = clip_inputs(model, seconds, device, seed=seconds)
            compiled(**inputs, logits_to_keep=1)
            rows.append({"backend": name, "seconds": seconds, "tokens": int(inputs["input_ids"].shape[1]),
                         "pruned": last_stats().pruned if backend is not None else False,
                         "decoder_compiles": backend.decoder_compiles if backend is not None else None,
                         "new_dynamo_graphs": counters["stats"]["unique_graphs"] - graphs_before})
        del compiled
    return rows


def timing_row(name: str, timing, **extra) -> dict:
    return {"variant": name, "median_s": timing.median_s, "runs_s": timing.runs_s, **extra}


def glue_columns(run) -> dict:
    """Host reads, dispatcher-level ops and host-to-device uploads of the seats glue in one call (all glue, and
    the selection part: everything after seats_begin); a seats custom op counts as the Triton launches it
    makes on CUDA."""
    with counting_glue() as per_glue:
        run()
    everything = total(per_glue)
    selection = total({name: counts for name, counts in per_glue.items() if name != "seats_begin"})
    return {"glue_host_reads": everything.reads, "glue_ops": everything.launches,
            "glue_uploads": everything.upload_count,
            "selection_glue_host_reads": selection.reads, "selection_glue_ops": selection.launches}


def device_columns(rows: list[dict], runs: dict, model, inputs, repeats: int, device: torch.device, log=print) -> None:
    """CUDA only: kernel launches and host syncs of one call (torch.profiler), the encoders run alone (eagerly
    for the eager variants, Inductor-compiled for the compiled ones; LLM = total - encoders), and the GPU
    time of the seats glue (CUDA events around each glue call)."""
    log("launches, syncs, encoder / LLM split (CUDA) ...")
    eager_encoders = encoder_call(model, inputs)
    compiled_encoders = torch.compile(eager_encoders)
    compiled_encoders()
    for row in rows:
        name = row["variant"]
        row.update(launches_and_syncs(runs[name], device) or {})
        encoders = compiled_encoders if name in ("plain Inductor", "backend=seats R=0.1") else eager_encoders
        row["encoders_s"] = timed_runs(encoders, repeats, device).median_s
        row["llm_s"] = row["median_s"] - row["encoders_s"]
        if name == "backend=seats R=0.1":
            row.update(GlueTimer().measure(runs[name]))


def run(layers: int, seconds: int, repeats: int, device: torch.device, log=print, with_sweep: bool = True) -> dict:
    model = build(layers, device)
    inputs = clip_inputs(model, seconds, device)
    ids = inputs["input_ids"][0]
    cfg = model.config
    counts = {"tokens": int(ids.numel()), "video": int((ids == cfg.video_token_id).sum()),
              "audio": int((ids == cfg.audio_token_id).sum())}
    counts["text"] = counts["tokens"] - counts["video"] - counts["audio"]
    log(f"model: {layers} decoder layers at Qwen2.5-Omni-3B widths; clip {seconds} s: {counts}")
    seats_options = METHODS["SEATS"](0.1, layers)
    rows, compile_rows = [], []

    def forward(module):
        return lambda: module(**inputs, logits_to_keep=1)

    with torch.inference_mode():
        log("plain eager ...")
        forward(model)()
        rows.append(timing_row("plain eager", timed_runs(forward(model), repeats, device)))

        log("plain Inductor (cold compile) ...")
        fresh_compile_caches()
        inductor = torch.compile(model)
        first = first_call_seconds(forward(inductor), device)
        timing = timed_runs(forward(inductor), repeats, device)
        rows.append(timing_row("plain Inductor", timing))
        compile_rows.append({"backend": "inductor", "first_call_s": first, "compile_s": first - timing.median_s})

        log("backend=\"seats\" R=0.1 (cold compile) ...")
        fresh_compile_caches()
        backend = SeatsBackend(seats_options)
        seats = torch.compile(model, backend=backend)
        first = first_call_seconds(forward(seats), device)
        shares = []
        timing = timed_runs(forward(seats), repeats, device,
                            after_each=lambda: shares.append(last_stats().selection_seconds))
        stats = last_stats()
        assert stats.pruned, stats.skipped
        rows.append(timing_row("backend=seats R=0.1", timing, selection_s=sorted(shares)[len(shares) // 2],
                               layer_tokens=stats.layer_tokens, **glue_columns(forward(seats))))
        compile_rows.append({"backend": "seats", "first_call_s": first, "compile_s": first - timing.median_s})

        log("eager SEATS reference, SEATS and baselines at R = 0.1 / 0.2 / 0.3 ...")
        methods = []
        for r in RETENTIONS:
            for method, options_for in METHODS.items():
                options = options_for(r, layers)
                run_reference = lambda: seats_forward(model, inputs, options)  # noqa: E731
                result = run_reference()
                timing = timed_runs(run_reference, max(1, repeats - 1), device)
                layer_tokens = [sum(c.values()) for c in result.layer_counts]
                media = counts["video"] + counts["audio"]
                methods.append({"method": method, "retention": r, "options": options, "median_s": timing.median_s,
                                "layer_tokens": layer_tokens,
                                "mean_media_fraction": (sum(layer_tokens) - counts["text"] * layers) / (layers * media)})
        reference = next(m for m in methods if m["method"] == "SEATS" and m["retention"] == 0.1)
        rows.append({"variant": "eager SEATS reference R=0.1", "median_s": reference["median_s"],
                     "runs_s": None, "layer_tokens": reference["layer_tokens"]})

        log("peak memory of one prefill each (after all timings) ...")
        reference_options = seats_options
        runs = {"plain eager": forward(model), "plain Inductor": forward(inductor),
                "backend=seats R=0.1": forward(seats),
                "eager SEATS reference R=0.1": lambda: seats_forward(model, inputs, reference_options)}
        for row in rows:
            row["peak_mib"] = peak_added_mib(runs[row["variant"]], device)
        if device.type == "cuda":
            device_columns(rows, runs, model, inputs, repeats, device, log)

        sweep = recompile_sweep(model, device, seats_options, log) if with_sweep else []
    return {"device": str(device), "machine": platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "layers": layers, "seconds": seconds, "counts": counts,
            "repeats": repeats, "rows": rows, "compile": compile_rows, "methods": methods, "sweep": sweep}


def print_report(result: dict, log=print) -> None:
    rows = {r["variant"]: r for r in result["rows"]}
    inductor = rows["plain Inductor"]["median_s"]
    log(f"\nprefill of {result['counts']['tokens']} tokens, {result['layers']} layers, {result['device']}, "
        f"{result['threads']} threads (median of {result['repeats']})")
    def cell(row, key, fmt):
        return format(row[key], fmt) if row.get(key) is not None else "-"

    log(f"{'variant':<30} {'median s':>9} {'vs Inductor':>11} {'peak MiB':>9} {'glue reads':>10} {'glue ops':>8} "
        f"{'launches':>8} {'syncs':>6} {'encoders s':>10} {'LLM s':>7}")
    for r in result["rows"]:
        log(f"{r['variant']:<30} {r['median_s']:>9.3f} {inductor / r['median_s']:>10.2f}x {cell(r, 'peak_mib', '9.0f'):>9} "
            f"{cell(r, 'glue_host_reads', 'd'):>10} {cell(r, 'glue_ops', 'd'):>8} {cell(r, 'launches', 'd'):>8} "
            f"{cell(r, 'syncs', 'd'):>6} {cell(r, 'encoders_s', '.3f'):>10} {cell(r, 'llm_s', '.3f'):>7}")
    seats = rows["backend=seats R=0.1"]
    log(f"seats glue: {seats['glue_host_reads']} host reads, {seats['glue_ops']} ops + {seats['glue_uploads']} "
        "host-to-device uploads (selection after seats_begin: "
        f"{seats['selection_glue_host_reads']} reads, {seats['selection_glue_ops']} ops; a custom op counts as "
        "its CUDA launches)")
    if seats.get("selection_gpu_s") is not None:
        log(f"seats on the GPU timeline: selection {seats['selection_s']:.4f} s wall, glue spans "
            f"{cell(seats, 'selection_gpu_s', '.4f')} s, decoder span {cell(seats, 'decoder_span_s', '.4f')} s")
    log(f"selection glue: {seats['selection_s']:.4f} s = {100 * seats['selection_s'] / seats['median_s']:.1f}% "
        f"of the pruned prefill; layer tokens {seats['layer_tokens']}")
    compile_s = {c["backend"]: c["compile_s"] for c in result["compile"]}
    log(f"cold compile: Inductor {compile_s['inductor']:.1f} s, seats {compile_s['seats']:.1f} s "
        f"({compile_s['seats'] / compile_s['inductor']:.2f}x)")
    log(f"\n{'method':<30} {'R':>4} {'median s':>9} {'media kept':>10}   (eager reference)")
    for m in result["methods"]:
        log(f"{m['method']:<30} {m['retention']:>4.1f} {m['median_s']:>9.3f} {m['mean_media_fraction']:>10.3f}")
    for name in dict.fromkeys(s["backend"] for s in result["sweep"]):
        sweep = [s for s in result["sweep"] if s["backend"] == name]
        decoder = f"decoder graph compiled {sweep[-1]['decoder_compiles']} time(s); " if name == "seats" else ""
        log(f"{name}, {len(sweep)} lengths: {decoder}new Dynamo graphs per length "
            f"{[s['new_dynamo_graphs'] for s in sweep]}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/results/prefill.json"))
    parser.add_argument("--no-sweep", action="store_true", help="skip the recompiles over 10 video lengths")
    parser.add_argument("--sweep-only", action="store_true",
                        help="re-run only the recompile sweep and replace it in the existing --json result")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.sweep_only:
        result = json.loads(args.json.read_text())
        with torch.inference_mode():
            model = build(result["layers"], device)
            result["sweep"] = recompile_sweep(model, device, METHODS["SEATS"](0.1, result["layers"]))
            result["sweep_torch"] = torch.__version__
        write_json(args.json, result)
        return result
    result = run(args.layers, args.seconds, args.repeats, device, with_sweep=not args.no_sweep)
    print_report(result)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
