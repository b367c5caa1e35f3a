"""Encoder towers in a prefill: per-chunk SDPA against one variable-length call per layer, and what SEATS
leaves of the prefill once the towers are fast. One process, one model, the same weights and inputs:

  plain eager            transformers as shipped (the towers' sdpa path: one SDPA call per segment)
  plain eager + fast     seats_fx.use_fast_encoders(model): one attention call per encoder layer, no pruning
  seats + fast           seats_fx.compile(model, {"retention": R}) (fast encoders are its default), or with
                         --seats reference the eager SEATS reference (seats_fx.reference.seats_forward)

Per variant: prefill wall time (median of --repeats after a warm-up call; logits of the last position only,
as generate()'s prefill), the encoders' share (wall time from the vision / audio tower's entry to its exit,
taken in separate runs by hooks that synchronise the device there), and attention kernels per tower call
(counted with a dispatch mode: every op whose name says "attention"; eager variants); and how far the fast
towers' outputs are from the per-chunk ones on the same clip (max |diff|). --dynamo-graphs adds
how many Dynamo graphs a new clip length costs, with and without fast encoders (tiny thinker, Dynamo's
own eager backend, dynamic=True: graph counts do not depend on the lowering), and under seats_fx.compile
(its graphs run eagerly).

Cases: "7b-60s" (default on CUDA): Qwen2.5-Omni-7B thinker shapes, random bf16 weights, a 60 s clip at
336x336 and 2 fps with its audio track. "cpu" (default without CUDA): a small thinker whose towers keep the
7B towers' segment structure (336x336 frames, 112-pixel windows, a full-attention block every 8, head dims
80 and 64, 100-frame audio chunks) at small widths, a 4 s clip.
Usage: python -m bench.encoders [--case cpu|7b-60s] [--repeats 3] [--retention 0.1] [--seats compiled|reference]
       [--inductor | --no-inductor] [--dynamo-graphs] [--threads N] [--json bench/results/encoders.json]
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

import seats_fx
from bench.measure import first_call_seconds, synchronize, timed_runs, write_json
from seats_fx.encoder_attention import encoder_towers, use_fast_encoders
from seats_fx.models.configs import TinySpec, real_qwen2_5_omni_config, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import seats_forward

CASES = {
    "7b-60s": dict(seconds=60, side=336),
    "cpu": dict(seconds=4, side=336),
}


def cpu_config():
    """A Qwen2.5-Omni thinker small enough for a CPU, with the 7B towers' segment structure and head dims."""
    # 28 decoder layers: the authors' 7B stage layers apply unchanged (as in the demo)
    spec = TinySpec(vocab_size=8192, hidden_size=256, num_layers=28, num_heads=4, num_kv_heads=2,
                    intermediate_size=512, vision_depth=8, vision_hidden=160, audio_layers=8, audio_hidden=128)
    return tiny_qwen2_5_omni_config(spec)  # vision: 2 heads x 80, full attention in block 8; audio: 2 x 64


def build(case: str, device: torch.device, dtype: torch.dtype):
    config = real_qwen2_5_omni_config("7B") if case == "7b-60s" else cpu_config()
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def clip(model, case: str, device: torch.device) -> dict:
    shape = CASES[case]
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=shape["seconds"], height=shape["side"],
                                                          width=shape["side"]))
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


class _AttentionCalls(TorchDispatchMode):
    """Counts ops whose name says "attention" while a tower runs (tower_open set by the tower hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list] = []
        self.tower_open = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.tower_open and "attention" in str(func):
            self.calls[-1][1] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def _tower_hooks(model, on_enter, on_exit):
    handles = []
    for kind, tower in encoder_towers(model).items():
        handles.append(tower.register_forward_pre_hook(torch.compiler.disable(lambda *_, k=kind: on_enter(k))))
        handles.append(tower.register_forward_hook(torch.compiler.disable(lambda *_, k=kind: on_exit(k))))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def attention_calls(model, run) -> list[list]:
    """Returns [tower, attention kernels] for each tower call of one run()."""
    mode = _AttentionCalls()

    def enter(kind):
        mode.calls.append([kind, 0])
        mode.tower_open = True

    def leave(kind):
        mode.tower_open = False

    with _tower_hooks(model, enter, leave), mode:
        run()
    return mode.calls


def encoder_seconds(model, run, repeats: int, device: torch.device) -> float:
    """Returns the median over repeats of the summed wall time of the tower calls in one run()."""
    spans: list[float] = []
    start = {}

    def enter(kind):
        synchronize(device)
        start[kind] = time.perf_counter()

    def leave(kind):
        synchronize(device)
        spans.append(time.perf_counter() - start[kind])

    totals = []
    with _tower_hooks(model, enter, leave):
        run()  # warm-up (and, compiled, the recompile the hooks cause)
        for _ in range(repeats):
            spans.clear()
            run()
            totals.append(sum(spans))
    return sorted(totals)[len(totals) // 2]


def measure(name: str, model, run, repeats: int, device: torch.device, count_calls: bool, log=print) -> dict:
    first = first_call_seconds(run, device)
    total = timed_runs(run, repeats, device)
    encoders = encoder_seconds(model, run, repeats, device)
    row = {"variant": name, "first_call_s": first, "prefill_s": total.median_s, "prefill_runs_s": total.runs_s,
           "encoders_s": encoders}
    if count_calls:
        calls = attention_calls(model, run)
        row["attention_calls"] = {kind: sum(c for k, c in calls if k == kind) for kind, _ in calls}
        row["tower_calls"] = len(calls)
    log(f"  {name}: prefill {total.median_s:.3f} s, encoders {encoders:.3f} s"
        + (f", attention calls in the towers {row['attention_calls']}" if count_calls else ""))
    return row


def encoder_features(model, inputs: dict) -> dict[str, torch.Tensor]:
    """Returns the vision and audio towers' outputs for the clip (what the LLM receives from them)."""
    base = model.model if hasattr(model.model, "get_video_features") else model  # transformers 5.18+ / 5.17
    with torch.no_grad():
        video = base.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
        audio = base.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"], return_dict=True)
    return {"vision": torch.cat(list(video.pooler_output)).float(), "audio": audio.last_hidden_state.float()}


def dynamo_graphs_per_length(log=print) -> list[dict]:
    """Dynamo graphs each new clip length costs a plain forward (tiny thinker, dynamic=True), with and without
    fast encoders, and a seats_fx.compile'd one. Graph counts do not depend on the lowering, so Dynamo's eager
    backend compiles them (seats: its rewritten graphs run eagerly)."""
    from torch._dynamo.utils import counters

    rows = []
    for name in ("per-chunk sdpa", "fast encoders", "seats_fx.compile"):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config()).eval()
        if name == "fast encoders":
            use_fast_encoders(model)
        if name == "seats_fx.compile":  # fast encoders, the placeholder mask eager, the graphs run as rewritten
            compiled = seats_fx.compile(model, {"retention": 0.3, "inductor": False})
        else:
            compiled = torch.compile(model, backend="eager", dynamic=True)
        for seconds in (4, 6, 8, 10, 12):
            before = counters["stats"]["unique_graphs"]
            with torch.no_grad():
                compiled(**synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, seed=seconds)))
            rows.append({"towers": name, "seconds": seconds,
                         "new_dynamo_graphs": counters["stats"]["unique_graphs"] - before})
        log(f"  {name}: new Dynamo graphs per clip length 4..12 s: {[r['new_dynamo_graphs'] for r in rows[-5:]]}")
    return rows


def run(case: str, repeats: int, retention: float, seats_mode: str, inductor: bool, dynamo_graphs: bool,
        device: torch.device, log=print) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    log(f"building the {case} thinker ({dtype}, {device}) ...")
    model = build(case, device, dtype)
    inputs = clip(model, case, device)
    tokens = int(inputs["input_ids"].shape[1])
    log(f"{tokens} prompt tokens; timing {repeats} prefills per variant")

    def forward(module):
        def call():
            with torch.no_grad():
                return module(**inputs, logits_to_keep=1)
        return call

    rows = [measure("plain eager", model, forward(model), repeats, device, True, log)]
    per_chunk = encoder_features(model, inputs)
    use_fast_encoders(model)
    fast_features = encoder_features(model, inputs)
    agreement = {kind: {"max_abs_diff": float((fast_features[kind] - per_chunk[kind]).abs().max()),
                        "max_abs": float(per_chunk[kind].abs().max())} for kind in per_chunk}
    log(f"  tower outputs, fast vs per-chunk: {agreement}")
    rows.append(measure("plain eager + fast encoders", model, forward(model), repeats, device, True, log))
    options = {"retention": retention, "inductor": inductor}
    if seats_mode == "reference":
        def reference():
            return seats_forward(model, {k: v for k, v in inputs.items()}, options)
        rows.append(measure("seats reference (eager) + fast encoders", model, reference, repeats, device, True, log))
    else:
        seats_fx.compile(model, options)  # in place, last: the model stays compiled
        rows.append(measure(f"seats{'' if inductor else ' (inductor=False)'} + fast encoders", model, forward(model),
                            repeats, device, False, log))
        stats = seats_fx.last_stats()
        rows[-1]["pruned"] = bool(stats and stats.pruned)
        rows[-1]["stage1_signal"] = dict(getattr(stats, "stage1_signal", {}) or {})
    plain, fast, seats = rows
    ratios = {"encoders_fast_vs_per_chunk": plain["encoders_s"] / fast["encoders_s"],
              "prefill_seats_vs_plain_eager": plain["prefill_s"] / seats["prefill_s"],
              "prefill_seats_vs_plain_eager_fast": fast["prefill_s"] / seats["prefill_s"]}
    result = {"case": case, "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
              else None, "machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "dtype": str(dtype), "prompt_tokens": tokens, "retention": retention, "seats": seats_mode,
              "inductor": inductor, "repeats": repeats, "variants": rows, "ratios": ratios,
              "tower_outputs_fast_vs_per_chunk": agreement}
    if dynamo_graphs:
        log("Dynamo graphs per new clip length ...")
        result["dynamo_graphs"] = dynamo_graphs_per_length(log)
    return result


def print_report(result: dict, log=print) -> None:
    log(f"\n{result['case']} on {result['gpu'] or result['device']} ({result['dtype']}, torch {result['torch']}, "
        f"{result['prompt_tokens']} tokens, R={result['retention']})")
    log(f"{'variant':45s} {'prefill s':>10s} {'encoders s':>11s}  attention calls in the towers")
    for row in result["variants"]:
        calls = row.get("attention_calls", "-")
        log(f"{row['variant']:45s} {row['prefill_s']:10.3f} {row['encoders_s']:11.3f}  {calls}")
    r = result["ratios"]
    log(f"encoders, fast vs per-chunk: {r['encoders_fast_vs_per_chunk']:.2f}x; prefill, seats vs plain eager: "
        f"{r['prefill_seats_vs_plain_eager']:.2f}x, vs plain eager + fast encoders: "
        f"{r['prefill_seats_vs_plain_eager_fast']:.2f}x")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--case", choices=sorted(CASES), default="7b-60s" if cuda else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--seats", choices=("compiled", "reference"), default="compiled" if cuda else "reference",
                        help="seats_fx.compile (default on CUDA) or the eager SEATS reference (default on CPU)")
    parser.add_argument("--inductor", action=argparse.BooleanOptionalAction, default=cuda,
                        help="lower compiled seats with Inductor (default on CUDA only: on a CPU compiling takes minutes)")
    parser.add_argument("--dynamo-graphs", action="store_true", help="also count Dynamo graphs per new clip length")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's); on a shared, loaded machine 1 thread avoids OpenMP "
                             "threads spinning against each other (measured: a small mul 0.28 ms on 1, 15 ms on 2)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/encoders.json"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if cuda else "cpu")
    result = run(args.case, args.repeats, args.retention, args.seats, args.inductor, args.dynamo_graphs, device)
    print_report(result)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
