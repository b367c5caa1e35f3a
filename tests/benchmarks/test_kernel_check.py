"""bench/kernel_check.py, the device-side check of the Triton kernels: it counts a kernel that differs from
its torch implementation (kernels swapped for stand-ins here, so no triton is needed), and runs end to end
under triton's interpreter (slow tier)."""

from __future__ import annotations

import pytest
import torch

from bench import kernel_check
from seats_fx.ops import triton_kernels
from seats_fx.ops.budget import top_per_slot_torch, window_budgets_torch
from seats_fx.ops.diversity import greedy_max_min_torch
from seats_fx.ops.relevance import text_query_relevance


@pytest.fixture
def torch_kernels(monkeypatch):
    """The kernels replaced by their torch implementations: every case agrees."""
    monkeypatch.setattr(triton_kernels, "greedy_max_min", greedy_max_min_torch)
    monkeypatch.setattr(triton_kernels, "window_budgets", window_budgets_torch)
    monkeypatch.setattr(triton_kernels, "top_per_slot", top_per_slot_torch)
    monkeypatch.setattr(triton_kernels, "query_relevance", text_query_relevance)


def test_a_kernel_that_differs_is_counted(torch_kernels, monkeypatch):
    def ties_to_the_last(scores, slot, limits, count):
        kept = top_per_slot_torch(scores, slot, limits, count)
        return kept.flip(0) if kept.numel() > 1 else kept + 1

    monkeypatch.setattr(triton_kernels, "top_per_slot", ties_to_the_last)
    result = kernel_check.check(4, torch.device("cpu"), log=lambda line: None)
    assert result["top_per_slot"]["differ"] == 4 and result["top_per_slot"]["first_differing_case"] == 0
    assert all(result[name]["differ"] == 0 for name in ("greedy_max_min", "window_budgets", "query_relevance"))


@pytest.mark.slow
def test_the_script_runs_the_kernels_interpreted_on_cpu(tmp_path, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    result = kernel_check.main(["--cases", "2", "--json", str(tmp_path / "check.json")])
    assert (tmp_path / "check.json").exists() and "interpreted" in result["device"]
    assert all(check["cases"] == 2 and check["differ"] == 0 for check in result["checks"].values())
