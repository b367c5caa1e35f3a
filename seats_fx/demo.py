"""The demo: a tiny random-weight Qwen2.5-Omni thinker on a synthetic clip, unpruned vs eager SEATS."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from seats_fx.config import SeatsConfig
from seats_fx.flops import measured_flops, predicted_decoder_flops
from seats_fx.models import adapter_for
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import SeatsResult, seats_decode
from seats_fx.selection_report import stage_place


@dataclass(frozen=True)
class DemoSpec:
    """The embedded default: a 28-layer tiny decoder (so the authors' 7B layer defaults 16/18/20/24 apply
    unchanged) and a 20 s clip at 2 fps with its audio track."""

    model: TinySpec = TinySpec(hidden_size=128, num_layers=28, num_heads=4, num_kv_heads=2, intermediate_size=512)
    clip: ClipSpec = ClipSpec(video_seconds=20, height=112, width=112)
    options: tuple[tuple[str, object], ...] = ()
    repeats: int = 3
    seed: int = 0
    # also time torch.compile(backend="seats") against plain Inductor (adds about 90 s of compiling)
    compiled: bool = False


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compiled_rows(model, inputs, config: SeatsConfig, repeats: int, out) -> dict:
    """Compiles with backend="seats" and with plain Inductor; prints compile and forward times."""
    from seats_fx.runtime import last_stats

    rows = {}
    for name, compiled in (("inductor", torch.compile(model, backend="inductor")),
                           ("seats", torch.compile(model, backend="seats", options=config.to_dict()))):
        with torch.no_grad():
            start = time.perf_counter()
            compiled(**inputs)
            rows[name] = (time.perf_counter() - start, _median_seconds(lambda: compiled(**inputs), repeats))
    stats = last_stats()
    out("")
    out(f"{'torch.compile':<34} {'inductor':>12} {'seats':>12} {'ratio':>8}")
    out(f"{'first call incl. compile (s)*':<34} {rows['inductor'][0]:>12.1f} {rows['seats'][0]:>12.1f} "
        f"{rows['seats'][0] / rows['inductor'][0]:>7.2f}x")
    out(f"{'forward wall time (s, median)':<34} {rows['inductor'][1]:>12.4f} {rows['seats'][1]:>12.4f} "
        f"{rows['inductor'][1] / rows['seats'][1]:>7.2f}x")
    out(f"seats kept per layer (tokens): {stats.layer_tokens if stats else 'not pruned'}")
    out("* Inductor's on-disk cache is already warm for the graphs seats shares with the first compile: "
        "not a cold-compile comparison")
    return {"compile_inductor": rows["inductor"][0], "compile_seats": rows["seats"][0],
            "time_inductor": rows["inductor"][1], "time_seats_compiled": rows["seats"][1]}


def run_demo(spec: DemoSpec = DemoSpec(), print_fn=print) -> dict:
    """Runs the demo, prints its table, and returns the figures as a dict."""
    torch.manual_seed(spec.seed)
    config = SeatsConfig.from_options(dict(spec.options))
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(spec.model)).eval()
    inputs = synthetic_clip_inputs(model.config, spec.clip)
    adapter = adapter_for(model)
    encoded = adapter.encode(inputs, config.window_seconds)
    text_model = model.model.language_model

    def unpruned_llm():
        with torch.no_grad():
            hidden = text_model(inputs_embeds=encoded.inputs_embeds, position_ids=encoded.position_ids,
                                attention_mask=encoded.attention_mask).last_hidden_state
            return model.lm_head(hidden)

    result: SeatsResult = seats_decode(adapter, encoded, config)
    flops_unpruned = measured_flops(unpruned_llm)
    flops_seats = measured_flops(lambda: seats_decode(adapter, encoded, config))

    text_cfg = model.config.text_config
    head_dim = text_cfg.hidden_size // text_cfg.num_attention_heads
    predict = lambda tokens, last: predicted_decoder_flops(tokens, adapter.decoder_layers[0],
                                                           text_cfg.num_attention_heads, head_dim, last,
                                                           text_cfg.hidden_size, text_cfg.vocab_size)
    length = encoded.inputs_embeds.shape[1]
    layer_tokens = [sum(c.values()) for c in result.layer_counts]
    predicted_ratio = predict([length] * adapter.depth, length) / predict(layer_tokens, layer_tokens[-1])

    with torch.no_grad():
        time_unpruned = _median_seconds(lambda: model(**inputs), spec.repeats)
        time_seats = _median_seconds(lambda: seats_decode(adapter, adapter.encode(inputs, config.window_seconds),
                                                          config), spec.repeats)
        time_llm_unpruned = _median_seconds(unpruned_llm, spec.repeats)
        time_llm_seats = _median_seconds(lambda: seats_decode(adapter, encoded, config), spec.repeats)
        reference_logits = model(**inputs).logits[:, -1]
    top1_agrees = bool((reference_logits.argmax(-1) == result.last_logits.argmax(-1)).all())

    counts0 = {"text": int((encoded.layout.modality == 0).sum()), "video": encoded.layout.count(1),
               "audio": encoded.layout.count(2)}
    rows = [("input", "-", counts0)] + [
        (s.stage, stage_place(s.after_layer), s.counts)
        for s in result.stages]
    mean_video = sum(c["video"] for c in result.layer_counts) / adapter.depth / max(1, counts0["video"])
    mean_audio = sum(c["audio"] for c in result.layer_counts) / adapter.depth / max(1, counts0["audio"])

    out = print_fn
    out(f"seats_fx demo: tiny Qwen2.5-Omni thinker ({adapter.depth} layers, hidden {text_cfg.hidden_size}, "
        f"random weights), {spec.clip.video_seconds} s clip at {spec.clip.fps:g} fps with audio, "
        f"{length} tokens; CPU, {torch.get_num_threads()} threads")
    out(f"options: video_retention={config.video_retention} audio_retention={config.audio_retention}; "
        f"stage-2 drops after layers {list(result.plan.drop_layers)}, text only from layer "
        f"{result.plan.late_block_layer}")
    out("")
    out(f"{'stage':<8} {'where':<16} {'text':>6} {'video':>6} {'audio':>6}")
    for stage, where, c in rows:
        out(f"{stage:<8} {where:<16} {c['text']:>6} {c['video']:>6} {c['audio']:>6}")
    out("")
    out(f"tokens processed, averaged over layers: video {mean_video:.3f}, audio {mean_audio:.3f} of the input")
    out("")
    out(f"{'':<34} {'unpruned':>12} {'SEATS':>12} {'ratio':>8}")
    out(f"{'LLM FLOPs (flop_counter)':<34} {flops_unpruned:>12.4g} {flops_seats:>12.4g} "
        f"{flops_unpruned / flops_seats:>7.2f}x")
    out(f"{'LLM FLOPs predicted from counts':<34} {'':>12} {'':>12} {predicted_ratio:>7.2f}x")
    out(f"{'LLM wall time (s, median)':<34} {time_llm_unpruned:>12.4f} {time_llm_seats:>12.4f} "
        f"{time_llm_unpruned / time_llm_seats:>7.2f}x")
    out(f"{'forward wall time (s, median)':<34} {time_unpruned:>12.4f} {time_seats:>12.4f} "
        f"{time_unpruned / time_seats:>7.2f}x")
    out(f"next-token top-1 agrees with the unpruned model: {top1_agrees} (random weights: a proxy only)")
    figures = {}
    if spec.compiled:
        figures = _compiled_rows(model, inputs, config, spec.repeats, out)
    return figures | {
        "stages": rows, "layer_counts": result.layer_counts, "flops_unpruned": flops_unpruned,
        "flops_seats": flops_seats, "flops_ratio": flops_unpruned / flops_seats,
        "predicted_flops_ratio": predicted_ratio, "time_llm_unpruned": time_llm_unpruned,
        "time_llm_seats": time_llm_seats, "time_unpruned": time_unpruned, "time_seats": time_seats,
        "mean_video": mean_video, "mean_audio": mean_audio,
    }
