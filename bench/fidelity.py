"""A fidelity PROXY: how far each method moves the random-weight model's next-token distribution.

Real checkpoints cannot be fetched here, so accuracy cannot be measured. This compares, on the demo's
tiny random-weight 28-layer thinker and synthetic clips, the next-token distribution after the prompt
under each method with the unpruned one: KL(unpruned || pruned) and top-1 agreement. It says how much a
selection perturbs the computation, not how well a real model answers.
Usage: python -m bench.fidelity [--clips 12] [--json bench/results/fidelity.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from bench.methods import METHODS
from seats_fx.demo import DemoSpec
from seats_fx.models.configs import tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import seats_forward

RETENTIONS = (0.1, 0.2, 0.3)


def run(clips: int) -> list[dict]:
    spec = DemoSpec()
    torch.manual_seed(spec.seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(spec.model)).eval()
    depth = spec.model.num_layers
    prompts = [synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, height=112, width=112, seed=seed))
               for seed, seconds in zip(range(clips), [10, 14, 20, 8] * clips)]
    with torch.no_grad():
        unpruned = [model(**inputs, logits_to_keep=1).logits[0, -1].log_softmax(-1) for inputs in prompts]
    rows = []
    for r in RETENTIONS:
        for method, options_for in METHODS.items():
            options = dict(options_for(r, depth), inductor=False)
            kls, agree = [], []
            for inputs, expected in zip(prompts, unpruned):
                got = seats_forward(model, inputs, options).logits[0, -1].log_softmax(-1)
                kls.append(float(torch.sum(expected.exp() * (expected - got))))
                agree.append(bool(got.argmax() == expected.argmax()))
            rows.append({"method": method, "retention": r, "options": options, "clips": clips,
                         "kl_mean": sum(kls) / len(kls), "kl_max": max(kls), "top1_agreement": sum(agree) / len(agree)})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"fidelity PROXY (random weights; not accuracy): next-token distribution vs unpruned, "
          f"{rows[0]['clips']} clips")
    print(f"{'method':<30} {'R':>4} {'mean KL':>9} {'max KL':>9} {'top-1 agree':>11}")
    for row in rows:
        print(f"{row['method']:<30} {row['retention']:>4.1f} {row['kl_mean']:>9.5f} {row['kl_max']:>9.5f} "
              f"{row['top1_agreement']:>11.2f}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--json", type=Path, default=Path("bench/results/fidelity.json"))
    args = parser.parse_args(argv)
    rows = run(args.clips)
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"proxy": True, "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
