"""LLM-prefill FLOPs of Qwen2.5-Omni-3B / -7B thinkers (meta device, real configs): unpruned vs SEATS.

Decoder layers run on meta tensors at the sequence lengths each layer processes (exact for SEATS: every
stage keeps a host-known total), counted with torch.utils.flop_counter (CPU SDPA included), plus the
selection work itself (stage-1 distances, stage-2 key projections and relevance rows), also counted.
Usage: python bench/flops.py [--seconds 60] [--json bench/results/flops.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from seats_fx.config import SeatsConfig
from seats_fx.flops import measured_flops
from seats_fx.models.configs import real_qwen2_5_omni_config
from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter
from seats_fx.ops.diversity import weighted_cosine_distance
from seats_fx.ops.relevance import text_query_relevance
from seats_fx.ops.schedule import count_at_level
from seats_fx.stage_plan import StagePlan

# A 60 s clip at 2 fps, frames resized to 448x252 (a 16:9 source inside the processor's pixel bounds):
# 32x18 patches of 14 px -> 144 merged tokens per 2-frame grid; audio 25 tokens/s.
FRAME = (252, 448)
TEXT_TOKENS = 60


def clip_windows(seconds: int) -> list[tuple[int, int]]:
    per_grid = (FRAME[0] // 28) * (FRAME[1] // 28)
    windows = []
    for start in range(0, seconds, 2):
        grids = min(2, seconds - start)
        windows.append((grids * per_grid, grids * 25))
    return windows


def decoder_flops(model, layer_tokens: list[int]) -> int:
    text_model = model.model.language_model
    hidden_size = text_model.config.hidden_size
    total = 0
    for layer, tokens in zip(text_model.layers, layer_tokens):
        if tokens == 0:
            continue
        hidden = torch.empty(1, tokens, hidden_size, device="meta")
        positions = torch.zeros(3, 1, tokens, dtype=torch.long, device="meta")
        cos, sin = text_model.rotary_emb(hidden, positions)
        total += measured_flops(lambda: layer(hidden, attention_mask=None, position_embeddings=(cos, sin)))
    return total


def selection_flops(model, plan: StagePlan, windows: list[tuple[int, int]], layer_tokens: list[int]) -> int:
    """FLOPs of the selection itself: stage-1 weighted distances per group, stage-2 scoring per drop."""
    hidden_size = model.model.language_model.config.hidden_size
    total = 0
    for video, audio in windows:
        for size in (video, audio):
            if size:
                embeds = torch.empty(1, size, hidden_size, device="meta")
                total += measured_flops(lambda: weighted_cosine_distance(embeds, torch.empty(1, size, device="meta")))
    attention = model.model.language_model.layers[0].self_attn
    for layer in plan.drop_layers:
        tokens = layer_tokens[layer - 1]
        normed = torch.empty(1, tokens, hidden_size, device="meta")
        keys = attention.k_proj(normed).view(1, tokens, -1, attention.head_dim).transpose(1, 2)
        query = attention.q_proj(normed[:, -1:]).view(1, 1, -1, attention.head_dim).transpose(1, 2)
        total += measured_flops(lambda: attention.k_proj(normed)) + measured_flops(lambda: attention.q_proj(normed[:, -1:]))
        total += measured_flops(lambda: text_query_relevance(query, keys, None, attention.scaling))
    return total


def run(seconds: int) -> list[dict]:
    windows = clip_windows(seconds)
    video, audio = sum(v for v, _ in windows), sum(a for _, a in windows)
    length = TEXT_TOKENS + video + audio
    settings = [("R=0.1", {"retention": 0.1}), ("R=0.2", {"retention": 0.2}), ("R=0.3", {"retention": 0.3}),
                ("paper R=10% (v .06 / a .35)", {"video_retention": 0.06, "audio_retention": 0.35})]
    rows = []
    for size in ("3B", "7B"):
        with torch.device("meta"):
            model = Qwen2_5OmniThinkerForConditionalGeneration(real_qwen2_5_omni_config(size)).eval()
        depth = len(model.model.language_model.layers)
        with torch.no_grad():
            unpruned = decoder_flops(model, [length] * depth)
            for name, options in settings:
                config = SeatsConfig(**options)
                plan = StagePlan.resolve(config, depth, Qwen2_5OmniAdapter.drop_layer_fractions,
                                         Qwen2_5OmniAdapter.late_block_fraction)
                tokens = plan.layer_token_counts(TEXT_TOKENS, windows)
                pruned = decoder_flops(model, tokens)
                overhead = selection_flops(model, plan, windows, tokens)
                kept_video = sum(count_at_level(plan.video.encoder_level, v) for v, _ in windows)
                rows.append({
                    "model": f"Qwen2.5-Omni-{size}", "setting": name, "tokens": length, "video": video,
                    "audio": audio, "text": TEXT_TOKENS, "depth": depth, "drop_layers": list(plan.drop_layers),
                    "late_block_layer": plan.late_block_layer, "stage1_video_kept": kept_video,
                    "unpruned_tflops": unpruned / 1e12, "seats_tflops": (pruned + overhead) / 1e12,
                    "selection_tflops": overhead / 1e12, "reduction": unpruned / (pruned + overhead),
                    "mean_media_fraction": (sum(tokens) - TEXT_TOKENS * depth) / (depth * (video + audio)),
                })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--json", type=Path, default=Path("bench/results/flops.json"))
    args = parser.parse_args()
    rows = run(args.seconds)
    print(f"LLM prefill FLOPs, {args.seconds} s clip at 2 fps {FRAME[1]}x{FRAME[0]} with audio; "
          f"{platform.machine()}, torch {torch.__version__}")
    print(f"{'model':<20} {'setting':<28} {'tokens':>7} {'unpruned TF':>12} {'SEATS TF':>9} {'select TF':>9} "
          f"{'media kept':>10} {'reduction':>9}")
    for r in rows:
        print(f"{r['model']:<20} {r['setting']:<28} {r['tokens']:>7} {r['unpruned_tflops']:>12.1f} "
              f"{r['seats_tflops']:>9.2f} {r['selection_tflops']:>9.3f} {r['mean_media_fraction']:>10.3f} "
              f"{r['reduction']:>8.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"seconds": args.seconds, "frame": FRAME, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
