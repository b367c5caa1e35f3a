"""backend="seats" from a fresh process that never imports seats_fx, on a saved tiny checkpoint."""

import json
import subprocess
import sys
import textwrap

import torch

from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(sys.argv[1]).eval()
    inputs = torch.load(sys.argv[2])
    imported_before = "seats_fx" in sys.modules  # the user never imports it; torch finds the entry point
    compiled = torch.compile(model, backend="seats", options={"retention": 0.1, "inductor": False})
    with torch.no_grad():
        logits = compiled(**inputs).logits
    import seats_fx  # only to read what the backend did
    stats = seats_fx.last_stats()
    print(json.dumps({"imported_before": imported_before, "pruned": stats.pruned,
                      "video": stats.mean_fraction("video"), "audio": stats.mean_fraction("audio"),
                      "layer_tokens": stats.layer_tokens, "input_counts": stats.input_counts,
                      "finite": bool(torch.isfinite(logits[:, -1]).all())}))
""")


def test_fresh_process_prunes_to_about_a_tenth(tmp_path, tiny_thinker):
    tiny_thinker.save_pretrained(tmp_path / "model")
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=6))
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "run.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "model"),
                           str(tmp_path / "inputs.pt")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["imported_before"] and report["pruned"] and report["finite"]
    # default 8-layer schedule for retention 0.1: stage 1 keeps 14 %, stage 2 and 3 bring the layer average to ~10 %
    assert abs(report["video"] - 0.1) < 0.03 and abs(report["audio"] - 0.1) < 0.03, report
    assert report["layer_tokens"][-1] == report["input_counts"]["text"]
