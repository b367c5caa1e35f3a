"""Device check: a Qwen2.5-Omni-7B-shaped thinker with random bf16 weights on a 60 s clip with audio, up to
six ways in one process: the eager SEATS reference, plain eager, plain Inductor, backend="seats" with
Inductor (the bare torch.compile usage), plain eager with fast encoders and the fast rope index
(seats_fx.use_fast_encoders, use_fast_rope_index) and seats_fx.compile (fast encoders, Inductor), and
seats_fx.compile with Inductor's C++ wrapper for the decoder pieces (compile-cpp, SeatsConfig.cpp_wrapper),
and seats_fx.compile with the decoder pieces replayed as CUDA graphs (compile-graphs, SeatsConfig.cuda_graphs:
two untimed calls before the timed ones, the second records the graphs).

Prints a table and writes JSON: prefill total, encoders and LLM part, selection time, kernel launches and
host syncs (torch.profiler), host reads and ops of the seats glue (seats_fx.host_reads), peak memory, tokens
each decoder layer processed, max |logit diff| of the last position against the reference, and for the seats
variants how many kept positions differ from the reference's at each selection. Sized for
<= 6 minutes on one H100 (random-weight init on the GPU, one cold compile per compiled variant, three timed
runs each); variants that would start past --budget-s are skipped and say so.

How the parts are measured: encoders = the two towers run alone (get_video_features + get_audio_features),
eagerly for the eager variants and compiled with Inductor for plain Inductor; LLM = total - encoders. The
decoder's own span is measured directly on CUDA: for the eager variants with CUDA events from the first
decoder layer's entry to the last layer's exit (forward hooks), for the seats variants from the first glue
call (seats_begin, just before the first layer) to the last (seats_finish); selection = the summed
GPU-timeline spans of the glue calls. The seats variants' towers are not compiled and timed on their own
(a second cold compile of them): their LLM part is the decoder span. The reference times its encode and
decode calls separately. The variants run in the order given; the JSON is written after each, and a
variant that fails is recorded with its error and the rest go on.

Usage: python -m bench.gpu_check [--tiny] [--seconds 60] [--variants reference,eager,seats,fast,compile]
       [--json bench/results/gpu_check.json]
  --tiny: an 8-layer tiny thinker and an 8 s clip, on CPU when no GPU is there (proves the script runs).
Runs on torch 2.11-2.13 with transformers 5.17-5.23 (the stock CUDA image has torch 2.11, transformers 5.17).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import transformers
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from bench.measure import synchronize, timed_runs, write_json
import seats_fx
from seats_fx import SeatsBackend, last_stats
from seats_fx.call import set_glue_observer
from seats_fx.host_reads import counting_glue, total
from seats_fx.encoder_attention import use_fast_encoders
from seats_fx.rope_index import use_fast_rope_index
from seats_fx.models import adapter_for
from seats_fx.models.configs import TinySpec, real_qwen2_5_omni_config, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.passes.piece_graphs import COUNTS as PIECE_GRAPH_COUNTS
from seats_fx.reference import seats_forward

# CUDA runtime / driver calls that launch work, and those that block the host until the GPU catches up
LAUNCH_EVENTS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                 "cudaLaunchCooperativeKernel", "cudaGraphLaunch")
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
GLUE_RANGE = "seats_glue"
FAST_NAME = "plain eager + fast encoders + fast rope index"
CPP_NAME = "seats_fx.compile + Inductor, C++ wrapper"
GRAPHS_NAME = "seats_fx.compile + Inductor, CUDA graphs"


def _log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)


def median_seconds(run, device: torch.device, repeats: int) -> tuple[float, list[float]]:
    timing = timed_runs(run, repeats, device)
    return timing.median_s, timing.runs_s


def peak_memory_mib(run, device: torch.device) -> float | None:
    """Peak memory one call adds: the CUDA allocator's peak, or the process's peak RSS on Linux CPUs."""
    if device.type != "cuda":
        from bench.measure import peak_added_mib

        return peak_added_mib(run, device)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20


@contextlib.contextmanager
def _glue_ranges():
    """Marks every seats glue call as a profiler range, so launches can be attributed to the glue."""
    def observe(name):
        return torch.profiler.record_function(f"{GLUE_RANGE}:{name}")

    previous = set_glue_observer(observe)
    try:
        yield
    finally:
        set_glue_observer(previous)


def launches_and_syncs(run, device: torch.device, trace: Path | None = None) -> dict | None:
    """Returns kernel launches and host syncs of one call under torch.profiler (CUDA only), in all and inside
    the seats glue. With `trace`, also writes that call's timeline there (gzipped Chrome trace) and a table
    of its kernels by GPU time beside it (.txt), for reading where the time went."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with _glue_ranges(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        synchronize(device)
    if trace is not None:
        _write_trace(prof, trace)
    events = prof.events()
    names = Counter(event.name for event in events)

    def in_glue(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith(GLUE_RANGE):
                return True
            parent = parent.cpu_parent
        return False

    glue = Counter(event.name for event in events if event.name in LAUNCH_EVENTS + SYNC_EVENTS and in_glue(event))
    # the final synchronize() above is ours, not the prefill's
    return {"launches": sum(names[n] for n in LAUNCH_EVENTS), "syncs": sum(names[n] for n in SYNC_EVENTS) - 1,
            "glue_launches": sum(glue[n] for n in LAUNCH_EVENTS), "glue_syncs": sum(glue[n] for n in SYNC_EVENTS)}


def _write_trace(prof, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix("")  # name.json.gz -> name.json
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    raw.unlink()
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=60, max_name_column_width=90)
    path.with_name(path.name.replace(".json.gz", ".txt")).write_text(table)


def trace_path(trace_dir: Path | None, variant: str) -> Path | None:
    """Where a variant's profiled call is written under --trace-dir (a file name of letters, digits, '_')."""
    if trace_dir is None:
        return None
    return trace_dir / ("".join(c if c.isalnum() else "_" for c in variant).strip("_") + ".json.gz")


class GlueTimer:
    """CUDA events around every seats glue call: the GPU-timeline span of each (kernels plus the gaps in
    which the GPU waited for the host), and the decoder's span from seats_begin to seats_finish."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def _span(self, name: str):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self.spans.append((name, start, end))

    def measure(self, run) -> dict:
        self.spans = []
        called = torch.cuda.Event(enable_timing=True)
        previous = set_glue_observer(self._span)
        try:
            called.record()
            run()
        finally:
            set_glue_observer(previous)
        torch.cuda.synchronize()
        selection = sum(start.elapsed_time(end) for name, start, end in self.spans if name != "seats_begin") / 1e3
        begins = [start for name, start, _ in self.spans if name == "seats_begin"]
        finishes = [end for name, _, end in self.spans if name == "seats_finish"]
        decoder = begins[0].elapsed_time(finishes[-1]) / 1e3 if begins and finishes else None
        begin = sum(start.elapsed_time(end) for name, start, end in self.spans if name == "seats_begin") / 1e3
        # from the call to seats_begin: the towers and all the host and device work before the decoder (an
        # upper bound on the towers' own time in a compiled forward, where they are not timed alone)
        before = called.elapsed_time(begins[0]) / 1e3 if begins else None
        return {"selection_gpu_s": selection, "seats_begin_gpu_s": begin, "decoder_span_s": decoder,
                "before_decoder_s": before}


def decoder_span_seconds(model, run) -> float:
    """GPU-timeline seconds from the first decoder layer's entry to the last layer's exit in one run()
    (CUDA events recorded by forward hooks; eager models only: a hook would break a compiled graph)."""
    layers = adapter_for(model).decoder_layers
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    handles = [layers[0].register_forward_pre_hook(lambda *_: start.record()),
               layers[-1].register_forward_hook(lambda *_: end.record())]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def kept_against(stage_positions: list, reference_stages: list) -> list[dict]:
    """Per selection, whether a run kept the positions the eager reference kept: the stage, the layer it acts
    after, and how many positions only one of the two kept (0: the same tokens). In bf16 a stage-2 pick can
    flip under other rounding (see bench.precision_spread); on CPU in fp32 the tests require equality."""
    if len(stage_positions) != len(reference_stages):
        return [{"stage": "all", "mismatch": f"{len(stage_positions)} selections, the reference made "
                                             f"{len(reference_stages)}"}]
    rows = []
    for got, expected in zip(stage_positions, reference_stages):
        got_set = set(got.flatten().tolist())
        expected_set = set(expected.kept_positions.flatten().tolist())
        rows.append({"stage": expected.stage, "after_layer": expected.after_layer,
                     "kept": len(expected_set), "differ": len(got_set ^ expected_set)})
    return rows


def build(tiny: bool, layers: int, device: torch.device, dtype: torch.dtype):
    config = tiny_qwen2_5_omni_config(TinySpec(num_layers=layers)) if tiny else real_qwen2_5_omni_config("7B")
    return random_thinker(config, device, dtype)


def random_thinker(config, device: torch.device, dtype: torch.dtype):
    """A thinker of `config` with seed-0 random weights, made in `dtype` on `device`, in eval mode."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight into bf16 on the device: no fp32 copy of 8B weights
    try:
        with torch.device(device):
            model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def clip_inputs(model, seconds: int, side: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict:
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, height=side, width=side, seed=seed))
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()}


def _encoders(model, inputs):
    def run():
        model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        model.get_audio_features(inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"])
    return run


def _last_logits(output) -> torch.Tensor:
    return output.logits[:, -1].float()


def run_check(args) -> dict:
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    model = build(args.tiny, args.layers, device, dtype)
    inputs = clip_inputs(model, args.seconds, args.side, device, dtype)
    ids = inputs["input_ids"][0]
    counts = {"tokens": int(ids.numel()), "video": int((ids == model.config.video_token_id).sum()),
              "audio": int((ids == model.config.audio_token_id).sum())}
    depth = model.config.text_config.num_hidden_layers
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    _log(f"{name}: {'tiny' if args.tiny else '7B-shaped'} thinker ({depth} layers, {args.dtype}), "
         f"{args.seconds} s clip: {counts}", started)
    options = {"retention": args.retention}
    seats_options = dict(options, inductor=args.seats_inductor)
    seats_name = "backend=seats + Inductor" if args.seats_inductor else "backend=seats, graphs eager"
    result = {"device": name, "device_type": device.type, "torch": torch.__version__,
              "transformers": transformers.__version__, "triton": _triton_version(), "python": sys.version.split()[0],
              "model": "tiny" if args.tiny else "Qwen2.5-Omni-7B-shaped", "layers": depth, "dtype": args.dtype,
              "seconds": args.seconds, "counts": counts, "options": options, "variants": []}
    forward = lambda module: (lambda: _last_logits(module(**inputs, logits_to_keep=1)))  # noqa: E731

    def over_budget(variant: str) -> bool:
        if time.perf_counter() - started > args.budget_s:
            result["variants"].append({"variant": variant, "skipped": f"time budget of {args.budget_s} s spent"})
            _log(f"{variant}: skipped (time budget spent)", started)
            return True
        return False

    def record(row: dict) -> None:
        result["variants"].append(row)
        result["wall_s"] = time.perf_counter() - started
        result["targets"] = _targets(result)
        write_json(args.json, result)  # after each variant: a run cut short still leaves what it measured

    def eager_row(name: str, run) -> dict:
        logits = run()
        encoders, _ = median_seconds(_encoders(model, inputs), device, args.repeats)
        row = _variant_row(name, run, device, args.repeats, encoders, None, [counts["tokens"]] * depth, logits,
                           reference_logits, args.trace_dir)
        if device.type == "cuda":
            row["decoder_span_s"] = decoder_span_seconds(model, run)
        return row

    def seats_row(name: str, run, untimed_calls: int = 0) -> dict:
        """untimed_calls: calls after the first before timing (a CUDA graph is recorded on a piece's second
        call of one input shape)."""
        first = time.perf_counter()
        logits = run()
        synchronize(device)
        first = time.perf_counter() - first
        for _ in range(untimed_calls):
            run()
        stats = last_stats()
        row = _variant_row(name, run, device, args.repeats, None, first,
                           stats.layer_tokens if stats is not None else None, logits, reference_logits,
                           args.trace_dir)
        row["pruned"], row["skipped_reason"] = (stats.pruned, stats.skipped) if stats else (False, "no stats")
        kept = stats.stage_positions if stats else []
        row["kept_vs_reference"] = kept_against(kept, reference.stages)
        if fast_reference:  # the reference again, its towers as seats_fx.compile's (fast encoders): bf16 apart
            row["kept_vs_fast_encoder_reference"] = kept_against(kept, fast_reference[0].stages)
            row["max_abs_logit_diff_vs_fast_encoder_reference"] = float(
                (logits - fast_reference[0].last_logits.float()).abs().max())
        # host wall time in the glue of the last timed run (the first call's includes one-time work: kernel
        # builds, the first dispatch of each op)
        timed = last_stats()
        row["selection_s"] = timed.selection_seconds if timed else None
        if device.type == "cuda":
            row.update(GlueTimer().measure(run))
            row["llm_s"] = row["decoder_span_s"]
        graphs_before = PIECE_GRAPH_COUNTS.copy()
        with counting_glue() as per_glue:
            run()
        # how the decoder pieces ran in that call: replayed CUDA graphs, recorded, ran as they are, refused
        row["piece_graphs"] = dict(PIECE_GRAPH_COUNTS - graphs_before)
        everything = total(per_glue)
        selection = total({n: c for n, c in per_glue.items() if n != "seats_begin"})
        row.update({"glue_host_reads": everything.reads, "glue_ops": everything.launches,
                    "glue_uploads": everything.upload_count,
                    "selection_glue_host_reads": selection.reads, "selection_glue_ops": selection.launches,
                    "glue_reads_by_function": {n: c.reads for n, c in per_glue.items()}})
        return row

    fast_reference: list = []
    with torch.inference_mode():
        # the eager reference: encode and decode timed apart; its logits are what the others are held to
        _log("eager SEATS reference ...", started)
        reference = seats_forward(model, inputs, options)
        reference_logits = reference.last_logits.float()
        if "reference" in args.variants:
            encode_s, decode_s = _reference_split(model, inputs, options, device, args.repeats)
            total_s, runs = median_seconds(lambda: seats_forward(model, inputs, options), device, args.repeats)
            record({
                "variant": "eager SEATS reference", "prefill_s": total_s, "runs_s": runs, "encoders_s": encode_s,
                "llm_s": decode_s, "selection_s": None, "first_call_s": None,
                "layer_tokens": [sum(c.values()) for c in reference.layer_counts],
                "device_counts": launches_and_syncs(lambda: seats_forward(model, inputs, options), device),
                "peak_mib": peak_memory_mib(lambda: seats_forward(model, inputs, options), device),
                "max_abs_logit_diff": 0.0})

        def plain_eager() -> dict:
            return eager_row("plain eager", forward(model))

        def plain_inductor() -> dict:
            torch._dynamo.reset()
            run = forward(torch.compile(model))
            first = time.perf_counter()
            logits = run()
            synchronize(device)
            first = time.perf_counter() - first
            compiled_encoders = torch.compile(_encoders(model, inputs))
            compiled_encoders()
            encoders, _ = median_seconds(compiled_encoders, device, args.repeats)
            return _variant_row("plain Inductor", run, device, args.repeats, encoders, first,
                                [counts["tokens"]] * depth, logits, reference_logits)

        def bare_seats() -> dict:
            torch._dynamo.reset()
            seats = torch.compile(model, backend=SeatsBackend(seats_options, positions_per_second=int(
                model.config.position_id_per_seconds)))
            return seats_row(seats_name, forward(seats))

        def eager_fast() -> dict:
            # what seats_fx.compile does to a model besides pruning and compiling: the baseline of SEATS's own
            # share (the rope index split alone took 108 ms of this prefill's GPU-idle time on an H200)
            use_fast_encoders(model)
            use_fast_rope_index(model)
            row = eager_row(FAST_NAME, forward(model))
            try:
                fast_reference.append(seats_forward(model, inputs, options))
            except Exception as error:  # the comparison it allows is extra; the check goes on without it
                row["fast_encoder_reference_error"] = repr(error)[:500]
            return row

        def seats_compile() -> dict:
            torch._dynamo.reset()
            seats_fx.compile(model, seats_options)
            return seats_row(compile_name, forward(model))

        def seats_compile_cpp() -> dict:
            torch._dynamo.reset()
            seats_fx.compile(model, dict(seats_options, cpp_wrapper=True))
            return seats_row(CPP_NAME, forward(model))

        def seats_compile_graphs() -> dict:
            torch._dynamo.reset()
            seats_fx.compile(model, dict(seats_options, cuda_graphs=True))
            return seats_row(GRAPHS_NAME, forward(model), untimed_calls=1)

        compile_name = f"seats_fx.compile{' + Inductor' if args.seats_inductor else ', graphs eager'}"
        runs = {"eager": ("plain eager", plain_eager), "inductor": ("plain Inductor", plain_inductor),
                "seats": (seats_name, bare_seats), "fast": (FAST_NAME, eager_fast),
                "compile": (compile_name, seats_compile), "compile-cpp": (CPP_NAME, seats_compile_cpp),
                "compile-graphs": (GRAPHS_NAME, seats_compile_graphs)}
        for key in args.variants:
            if key == "reference":
                continue
            name, measure = runs[key]
            if over_budget(name):
                continue
            _log(f"{name} ...", started)
            try:
                record(measure())
            except Exception as error:  # a device check reports what failed and goes on with the rest
                _log(f"{name} failed: {error!r}", started)
                record({"variant": name, "error": repr(error)[:2000]})
    result["wall_s"] = time.perf_counter() - started
    result["targets"] = _targets(result)
    return result


def _reference_split(model, inputs, options, device, repeats) -> tuple[float, float]:
    """Median seconds of the reference's encode (towers, merge, rope index) and decode (stages + layers)."""
    from seats_fx.config import SeatsConfig
    from seats_fx.models import adapter_for
    from seats_fx.reference import seats_decode

    config = SeatsConfig.from_options(options)
    adapter = adapter_for(model)
    encode = lambda: adapter.encode(inputs, config.window_seconds)  # noqa: E731
    encoded = encode()
    encode_s, _ = median_seconds(encode, device, repeats)
    decode_s, _ = median_seconds(lambda: seats_decode(adapter, encoded, config), device, repeats)
    return encode_s, decode_s


def _variant_row(name, run, device, repeats, encoders_s, first_call_s, layer_tokens, logits, reference_logits,
                 trace_dir: Path | None = None):
    total_s, runs = median_seconds(run, device, repeats)
    return {"variant": name, "prefill_s": total_s, "runs_s": runs, "encoders_s": encoders_s,
            "llm_s": total_s - encoders_s if encoders_s is not None else None, "selection_s": None, "first_call_s": first_call_s,
            "layer_tokens": layer_tokens,
            "device_counts": launches_and_syncs(run, device, trace_path(trace_dir, name)),
            "peak_mib": peak_memory_mib(run, device),
            "max_abs_logit_diff": float((logits - reference_logits).abs().max())}


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _targets(result: dict) -> dict:
    rows = {r["variant"]: r for r in result["variants"] if "prefill_s" in r}  # not the skipped or failed
    seats = rows.get("backend=seats + Inductor") or rows.get("backend=seats, graphs eager")
    eager = rows.get("plain eager")
    inductor = rows.get("plain Inductor")
    targets = {}
    compiled = rows.get("seats_fx.compile + Inductor") or rows.get("seats_fx.compile, graphs eager")
    fast = rows.get(FAST_NAME) or rows.get("plain eager + fast encoders")  # the latter: JSON from before
    cpp = rows.get(CPP_NAME)
    # the seats_fx.compile rows, each compared on its own
    compiled_rows = (("seats_fx.compile", compiled), ("C++ wrapper", cpp), ("CUDA graphs", rows.get(GRAPHS_NAME)))
    for name, row in (("seats", seats), *compiled_rows):
        if row and eager and row.get("decoder_span_s") and eager.get("decoder_span_s"):
            targets[f"decoder_speedup_vs_eager ({name})"] = eager["decoder_span_s"] / row["decoder_span_s"]
    for name, row in compiled_rows:
        if row and eager:
            targets[f"prefill_speedup_vs_eager ({name})"] = eager["prefill_s"] / row["prefill_s"]
        if row and fast:
            targets[f"prefill_speedup_vs_eager_fast ({name})"] = fast["prefill_s"] / row["prefill_s"]
            if row.get("selection_gpu_s"):
                targets[f"selection_share ({name})"] = row["selection_gpu_s"] / row["prefill_s"]
    if fast and eager:
        targets["encoders_fast_vs_per_chunk"] = eager["encoders_s"] / fast["encoders_s"]
    # the compiled towers, bounded: everything before seats_begin in the seats_fx.compile forward
    for name, row in compiled_rows:
        if row and eager and eager.get("encoders_s") and row.get("before_decoder_s"):
            targets[f"encoders_vs_per_chunk_at_least ({name})"] = eager["encoders_s"] / row["before_decoder_s"]
    # the seats rows' LLM part is their decoder span: compared above with the eager rows' decoder span
    if seats and inductor:
        targets["prefill_speedup_vs_inductor"] = inductor["prefill_s"] / seats["prefill_s"]
    if seats and eager:
        targets["prefill_speedup_vs_eager"] = eager["prefill_s"] / seats["prefill_s"]
    selection = seats and (seats.get("selection_gpu_s") or seats.get("selection_s"))
    if selection:
        targets["selection_share_of_pruned_prefill"] = selection / seats["prefill_s"]
    if seats and seats.get("decoder_span_s"):
        targets["decoder_span_s"] = seats["decoder_span_s"]
    return targets


def print_report(result: dict) -> None:
    print(f"\n{result['device']} ({result['device_type']}), torch {result['torch']}, transformers "
          f"{result['transformers']}, triton {result['triton']}; {result['model']} {result['layers']} layers "
          f"{result['dtype']}, {result['seconds']} s clip {result['counts']}, options {result['options']}")
    header = (f"{'variant':<28} {'prefill s':>9} {'encoders':>9} {'LLM s':>8} {'select s':>9} {'launches':>9} "
              f"{'syncs':>6} {'peak MiB':>9} {'max|dlogit|':>11} {'compile s':>9}")
    print(header)
    for row in result["variants"]:
        if "skipped" in row or "error" in row:
            print(f"{row['variant']:<28} {'skipped: ' + row['skipped'] if 'skipped' in row else 'failed: ' + row['error']}")
            continue
        dev = row.get("device_counts") or {}

        def cell(value, fmt):
            width = int(fmt.split(".")[0].rstrip("df") or 0)
            return format(value, fmt) if value is not None else "-".rjust(width)

        print(f"{row['variant']:<28} {cell(row['prefill_s'], '9.3f')} {cell(row['encoders_s'], '9.3f')} "
              f"{cell(row['llm_s'], '8.3f')} {cell(row.get('selection_gpu_s', row.get('selection_s')), '9.4f')} "
              f"{cell(dev.get('launches'), '9d')} {cell(dev.get('syncs'), '6d')} {cell(row['peak_mib'], '9.0f')} "
              f"{cell(row['max_abs_logit_diff'], '11.4f')} {cell(row.get('first_call_s'), '9.1f')}")
        if row.get("layer_tokens") is not None:
            print(f"{'':<28} tokens per layer {row['layer_tokens']}")
        for key, whose in (("kept_vs_reference", "the reference"),
                           ("kept_vs_fast_encoder_reference", "the reference with fast encoders")):
            if row.get(key):
                print(f"{'':<28} positions kept only by it or only by {whose}, per selection: "
                      + ", ".join(f"{k['stage']}@{k.get('after_layer', '-')}: {k.get('differ', k.get('mismatch'))}"
                                  for k in row[key]))
        if "glue_host_reads" in row:
            print(f"{'':<28} pruned {row['pruned']} ({row['skipped_reason'] or 'ok'}); glue host reads "
                  f"{row['glue_host_reads']} (selection {row['selection_glue_host_reads']}), glue ops "
                  f"{row['glue_ops']} (selection {row['selection_glue_ops']}); glue launches "
                  f"{dev.get('glue_launches', '-')}, glue syncs {dev.get('glue_syncs', '-')}")
        if row.get("before_decoder_s") is not None:
            print(f"{'':<28} before the decoder (towers and all else up to seats_begin): "
                  f"{row['before_decoder_s']:.3f} s")
        if row.get("piece_graphs"):
            print(f"{'':<28} decoder pieces in one call: {json.dumps(row['piece_graphs'])}")
    print(f"targets: {json.dumps(result['targets'])}; wall {result['wall_s']:.0f} s")


VARIANTS = ("reference", "eager", "inductor", "seats", "fast", "compile", "compile-cpp", "compile-graphs")
# they change the model (its towers' attention, its forward): listed last
IN_PLACE = ("fast", "compile", "compile-cpp", "compile-graphs")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny 8-layer thinker, 8 s clip (runs on CPU)")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers of the --tiny thinker")
    parser.add_argument("--seconds", type=int, default=None, help="clip length (default 60; --tiny: 8)")
    parser.add_argument("--side", type=int, default=None, help="frame side in pixels (default 336; --tiny: 112)")
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no variant after this many seconds")
    parser.add_argument("--json", type=Path, default=Path("bench/results/gpu_check.json"))
    parser.add_argument("--trace-dir", type=Path, default=None,
                        help="write each variant's profiled call there: a gzipped Chrome trace and a kernel table")
    parser.add_argument("--variants", default="reference,eager,inductor,seats",
                        help=f"comma-separated subset of {','.join(VARIANTS)} (the reference always runs: its logits "
                             "are what the others are held to; it is timed only when listed). They run in the "
                             "order given, fast, compile, compile-cpp and compile-graphs last. Default: all but those")
    parser.add_argument("--seats-inductor", action=argparse.BooleanOptionalAction, default=True,
                        help="lower the seats graphs with Inductor (--no-seats-inductor: the rewritten graphs run "
                             "eagerly, compared with plain eager; no cold compile)")
    args = parser.parse_args(argv)
    args.variants = list(dict.fromkeys(args.variants.split(",")))
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    in_place = [i for i, v in enumerate(args.variants) if v in IN_PLACE]
    if in_place and any(v not in IN_PLACE + ("reference",) for v in args.variants[in_place[0]:]):
        parser.error(f"--variants: {', '.join(IN_PLACE)} change the model in place: list them last")
    args.seconds = args.seconds or (8 if args.tiny else 60)
    args.side = args.side or (112 if args.tiny else 336)
    result = run_check(args)
    print_report(result)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
