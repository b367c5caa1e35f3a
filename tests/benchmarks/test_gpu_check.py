"""The device check's own logic, on a CPU: which variant orders it accepts, and the ratios it reports as
targets (the figures in README come from these)."""

import pytest

import torch

from bench.gpu_check import _targets, kept_against, main
from seats_fx.reference import StageRecord


@pytest.mark.parametrize("variants", ["compile,eager", "fast,seats", "fast,inductor,compile"])
def test_variants_that_change_the_model_in_place_must_come_last(variants, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--variants", variants])
    assert "change the model in place: list them last" in capsys.readouterr().err


def test_unknown_variants_are_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--variants", "eager,eagre"])
    assert "unknown ['eagre']" in capsys.readouterr().err


def _row(variant, prefill, encoders=None, decoder=None, **more):
    return {"variant": variant, "prefill_s": prefill, "encoders_s": encoders, "decoder_span_s": decoder, **more}


def test_targets_compare_decoder_spans_and_prefills_of_the_rows_present():
    result = {"variants": [
        _row("plain eager", 1.2, encoders=0.8, decoder=0.3),
        _row("plain eager + fast encoders", 0.6, encoders=0.2, decoder=0.3),
        _row("seats_fx.compile + Inductor", 0.3, decoder=0.05, selection_gpu_s=0.003, before_decoder_s=0.16),
        _row("seats_fx.compile + Inductor, C++ wrapper", 0.25, decoder=0.03),
        _row("seats_fx.compile + Inductor, CUDA graphs", 0.2, decoder=0.025, selection_gpu_s=0.004),
        {"variant": "backend=seats + Inductor", "skipped": "time budget of 1 s spent"},
        {"variant": "plain Inductor", "error": "RuntimeError('boom')"},
    ]}
    targets = _targets(result)
    assert targets["decoder_speedup_vs_eager (seats_fx.compile)"] == pytest.approx(6.0)
    assert targets["prefill_speedup_vs_eager (seats_fx.compile)"] == pytest.approx(4.0)
    assert targets["prefill_speedup_vs_eager_fast (seats_fx.compile)"] == pytest.approx(2.0)
    assert targets["selection_share (seats_fx.compile)"] == pytest.approx(0.01)
    assert targets["encoders_fast_vs_per_chunk"] == pytest.approx(4.0)
    # the compiled towers, bounded by all that runs before seats_begin
    assert targets["encoders_vs_per_chunk_at_least (seats_fx.compile)"] == pytest.approx(5.0)
    assert "encoders_vs_per_chunk_at_least (C++ wrapper)" not in targets
    # the C++ wrapper's row is compared on its own
    assert targets["decoder_speedup_vs_eager (C++ wrapper)"] == pytest.approx(10.0)
    assert targets["prefill_speedup_vs_eager_fast (C++ wrapper)"] == pytest.approx(2.4)
    assert "selection_share (C++ wrapper)" not in targets
    assert targets["decoder_speedup_vs_eager (CUDA graphs)"] == pytest.approx(12.0)
    assert targets["prefill_speedup_vs_eager (CUDA graphs)"] == pytest.approx(6.0)
    assert targets["selection_share (CUDA graphs)"] == pytest.approx(0.02)
    # rows that were skipped or failed give no ratio
    assert not any("seats)" in key for key in targets) and "prefill_speedup_vs_inductor" not in targets


def test_kept_positions_are_compared_with_the_reference_per_selection():
    reference = [StageRecord("stage1", 0, torch.tensor([[0, 2, 3, 5]]), {}),
                 StageRecord("stage2", 4, torch.tensor([[0, 3, 5]]), {})]
    same = kept_against([torch.tensor([[0, 2, 3, 5]]), torch.tensor([[0, 3, 5]])], reference)
    assert [(k["stage"], k["after_layer"], k["kept"], k["differ"]) for k in same] == \
        [("stage1", 0, 4, 0), ("stage2", 4, 3, 0)]
    flipped = kept_against([torch.tensor([[0, 2, 3, 5]]), torch.tensor([[0, 2, 5]])], reference)
    assert [k["differ"] for k in flipped] == [0, 2]  # 3 kept only by the reference, 2 only by the run
    assert "mismatch" in kept_against([torch.tensor([[0, 2, 3, 5]])], reference)[0]
