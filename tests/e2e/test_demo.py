import dataclasses

import pytest

from seats_fx.demo import DemoSpec, run_demo
from seats_fx.models.synthetic import ClipSpec


def test_demo_reports_flops_reduction_consistent_with_kept_counts():
    spec = dataclasses.replace(DemoSpec(), clip=ClipSpec(video_seconds=8), repeats=1)
    lines: list[str] = []
    figures = run_demo(spec, print_fn=lines.append)
    assert figures["flops_ratio"] > 1
    # the measured ratio is the kept counts' ratio, less the (small) selection overhead
    assert figures["flops_ratio"] == pytest.approx(figures["predicted_flops_ratio"], rel=0.05)
    assert figures["flops_ratio"] <= figures["predicted_flops_ratio"]
    assert any(line.startswith("stage1") for line in lines) and any("LLM FLOPs" in line for line in lines)
    assert figures["mean_video"] == pytest.approx(0.1, abs=0.03)


def test_demo_cli_runs_on_a_short_clip(capsys):
    from seats_fx.__main__ import main

    assert main(["demo", "--seconds", "4", "--retention", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "stage3" in out and "video_retention=0.3" in out
