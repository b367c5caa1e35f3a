"""LLM-prefill FLOPs on meta-device real configs: unpruned vs SEATS and the baselines.

Decoder layers run on meta tensors at the sequence length each layer processes (exact: every stage keeps
a host-known total), counted with torch.utils.flop_counter (CPU SDPA included; MoE experts run through
transformers' batched_mm path, so only the routed top-k experts count), plus the selection work itself
(stage-1 distances, stage-2 key projections and relevance rows). lm_head is counted as the thinkers run
it: over every prompt position (their forward ignores logits_to_keep), and under SEATS over the rows kept
to the last layer (seats_fx.logits skips the zero rows of pruned tokens).
Usage: python -m bench.flops [--seconds 60] [--json bench/results/flops.json]
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration

from bench.clips import FRAME, QWEN2_5_OMNI, QWEN3_OMNI, TEXT_TOKENS, clip_windows
from bench.measure import write_json
from bench.methods import METHODS
from seats_fx.config import SeatsConfig
from seats_fx.flops import measured_flops
from seats_fx.models.configs import real_qwen2_5_omni_config, real_qwen3_omni_moe_config
from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter
from seats_fx.models.qwen3_omni_moe import Qwen3OmniMoeAdapter
from seats_fx.ops.diversity import weighted_cosine_distance
from seats_fx.ops.relevance import text_query_relevance
from seats_fx.stage_plan import StagePlan

MODELS = {
    "Qwen2.5-Omni-3B": (lambda: Qwen2_5OmniThinkerForConditionalGeneration(real_qwen2_5_omni_config("3B")),
                        Qwen2_5OmniAdapter, QWEN2_5_OMNI),
    "Qwen2.5-Omni-7B": (lambda: Qwen2_5OmniThinkerForConditionalGeneration(real_qwen2_5_omni_config("7B")),
                        Qwen2_5OmniAdapter, QWEN2_5_OMNI),
    "Qwen3-Omni-30B-A3B": (lambda: Qwen3OmniMoeThinkerForConditionalGeneration(real_qwen3_omni_moe_config()),
                           Qwen3OmniMoeAdapter, QWEN3_OMNI),
}
RETENTIONS = (0.1, 0.2, 0.3)
# the authors' R=10% setting: video 0.06 / audio 0.35 of the tokens, layer-averaged
PAPER_PAIR = {"video_retention": 0.06, "audio_retention": 0.35}


class DecoderFlops:
    """Counts one model's decoder FLOPs per sequence length (every layer of a family costs the same)."""

    def __init__(self, model) -> None:
        self.text_model = model.model.language_model
        self.lm_head = model.lm_head
        self.layer = self.text_model.layers[0]
        self.hidden = self.text_model.config.hidden_size

    @lru_cache(maxsize=None)
    def layer_flops(self, tokens: int) -> int:
        if tokens == 0:
            return 0
        hidden = torch.empty(1, tokens, self.hidden, device="meta")
        positions = torch.zeros(3, 1, tokens, dtype=torch.long, device="meta")
        cos, sin = self.text_model.rotary_emb(hidden, positions)
        return measured_flops(lambda: self.layer(hidden, attention_mask=None, position_embeddings=(cos, sin)))

    def total(self, layer_tokens: list[int]) -> int:
        """Decoder layers at these lengths, then lm_head over the rows the last layer processed."""
        rows = torch.empty(1, layer_tokens[-1], self.hidden, device="meta")
        return sum(self.layer_flops(n) for n in layer_tokens) + measured_flops(lambda: self.lm_head(rows))

    def selection(self, config: SeatsConfig, plan: StagePlan, windows: list[tuple[int, int]],
                  layer_tokens: list[int]) -> int:
        """FLOPs of the selection itself: stage-1 weighted distances per group, stage-2 scoring per drop."""
        total = 0
        if config.stage1 and config.stage1_selector in ("weighted_diversity", "diversity"):
            for group in (size for window in windows for size in window if size):
                embeds = torch.empty(1, group, self.hidden, device="meta")
                total += measured_flops(lambda: weighted_cosine_distance(embeds, torch.empty(1, group, device="meta")))
        attention = self.layer.self_attn
        for layer in plan.drop_layers:
            tokens = layer_tokens[layer - 1]
            normed = torch.empty(1, tokens, self.hidden, device="meta")
            keys = attention.k_proj(normed).view(1, tokens, -1, attention.head_dim).transpose(1, 2)
            query = attention.q_proj(normed[:, -1:]).view(1, 1, -1, attention.head_dim).transpose(1, 2)
            total += measured_flops(lambda: attention.k_proj(normed)) + \
                measured_flops(lambda: attention.q_proj(normed[:, -1:]))
            total += measured_flops(lambda: text_query_relevance(query, keys, None, attention.scaling))
        return total


def settings_for(depth: int) -> list[tuple[str, float | None, dict]]:
    rows = [(method, r, build(r, depth)) for r in RETENTIONS for method, build in METHODS.items()]
    return rows + [("SEATS (paper pair v .06 / a .35)", None, dict(PAPER_PAIR))]


def run(seconds: int) -> list[dict]:
    rows = []
    for name, (build, adapter, family) in MODELS.items():
        windows = clip_windows(family, seconds)
        video, audio = sum(v for v, _ in windows), sum(a for _, a in windows)
        length = TEXT_TOKENS + video + audio
        with torch.device("meta"):
            model = build().eval()
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation("batched_mm")  # no data-dependent expert loop on meta tensors
        counter = DecoderFlops(model)
        depth = len(counter.text_model.layers)
        with torch.no_grad():
            unpruned = counter.total([length] * depth)
            for method, r, options in settings_for(depth):
                config = SeatsConfig(**options)
                plan = StagePlan.resolve(config, depth, adapter.drop_layer_fractions, adapter.late_block_fraction)
                tokens = plan.layer_token_counts(TEXT_TOKENS, windows, stage1=config.stage1)
                selection = counter.selection(config, plan, windows, tokens)
                pruned = counter.total(tokens) + selection
                rows.append({
                    "model": name, "method": method, "retention": r, "options": options, "tokens": length,
                    "video": video, "audio": audio, "text": TEXT_TOKENS, "depth": depth,
                    "drop_layers": list(plan.drop_layers), "late_block_layer": plan.late_block_layer,
                    "layer_tokens": tokens, "unpruned_tflops": unpruned / 1e12, "tflops": pruned / 1e12,
                    "selection_tflops": selection / 1e12, "reduction": unpruned / pruned,
                    "mean_media_fraction": (sum(tokens) - TEXT_TOKENS * depth) / (depth * (video + audio)),
                })
    return rows


def print_table(rows: list[dict], seconds: int) -> None:
    print(f"LLM prefill FLOPs, {seconds} s clip at 2 fps, {FRAME[1]}x{FRAME[0]} frames, with audio")
    print(f"{'model':<20} {'method':<32} {'R':>4} {'tokens':>6} {'unpruned TF':>11} {'TF':>7} {'select TF':>9} "
          f"{'media kept':>10} {'reduction':>9}")
    for r in rows:
        retention = f"{r['retention']:.1f}" if r["retention"] is not None else "-"
        print(f"{r['model']:<20} {r['method']:<32} {retention:>4} {r['tokens']:>6} {r['unpruned_tflops']:>11.1f} "
              f"{r['tflops']:>7.2f} {r['selection_tflops']:>9.3f} {r['mean_media_fraction']:>10.3f} "
              f"{r['reduction']:>8.2f}x")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--json", type=Path, default=Path("bench/results/flops.json"))
    args = parser.parse_args(argv)
    rows = run(args.seconds)
    print_table(rows, args.seconds)
    result = {"seconds": args.seconds, "frame": FRAME, "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
