"""The selection glue of a pruned prefill, counted: host reads of device data (each one a GPU stall on CUDA)
and ops launched, under seats_fx.host_reads' counting modes switched on for the glue functions only.

A read that sneaks back into a stage fails here with the file and line where it happens. Counted on the
tiny thinker through the backend without Inductor (the glue is the same code either way).
"""

from __future__ import annotations

import pytest
import torch

from seats_fx import SeatsBackend, last_stats
from seats_fx.call import SeatsCall
from seats_fx.host_reads import Counts, HostReadCounter, counting_glue, total
from seats_fx.models.configs import token_ids_for_vocab
from seats_fx.models.synthetic import ClipSpec, batch_inputs, synthetic_clip_inputs

# three stage-2 steps and a late-block cut on the 8-layer thinker: every kind of boundary runs
OPTIONS = dict(retention=0.1, progressive_drop_layers=(3, 4, 5), late_block_layer=7, inductor=False)
SELECTION = ("seats_select_stage1", "seats_select_stage2", "seats_select_stage3", "seats_gather",
             "seats_gather_mask", "seats_finish", "seats_align_cache")
# dispatcher-level ops that launch work in the selection glue of one batch-1 prefill, everything after
# seats_begin (seats custom ops count once: one Triton kernel on CUDA). Measured: 133 for 20 s and 60 s
# clips (28-layer tiny thinker, default stages, torch 2.13 CPU). Issue 16's budget of 150 is for all glue,
# seats_begin included (158 ops today, the lead's to trim).
SELECTION_OPS = 150
_compiled: dict = {}


def _compiled_model(model, options):
    key = (id(model), tuple(sorted(options.items())))
    if key not in _compiled:
        _compiled[key] = torch.compile(model, backend=SeatsBackend(options))
    return _compiled[key]


def glue_counts(model, inputs, options=OPTIONS) -> tuple[dict[str, Counts], Counts]:
    """Returns (counts per glue function, counts of the one host read of the layout sizes) of one prefill,
    counted on the second call (the first one compiles)."""
    compiled = _compiled_model(model, options)
    sizes = Counts()
    read_sizes = SeatsCall._read_sizes

    def counted_read_sizes(call):
        with HostReadCounter(sizes, where=True):
            read_sizes(call)

    with torch.no_grad():
        compiled(**inputs)
        SeatsCall._read_sizes = counted_read_sizes
        try:
            with counting_glue(where=True) as per_glue:
                compiled(**inputs)
        finally:
            SeatsCall._read_sizes = read_sizes
    assert last_stats().pruned, last_stats().skipped
    return per_glue, sizes


def _where(counts: Counts) -> str:
    return "\n".join(counts.read_sites) or "(no host read)"


def clip_glue_counts(model, seconds: int):
    return glue_counts(model, synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds)))


@pytest.fixture(scope="module")
def clip_counts(tiny_thinker):
    """Counts for an 8 s and a 20 s clip (4 and 10 windows); the slow tier adds a 60 s clip."""
    return {seconds: clip_glue_counts(tiny_thinker, seconds) for seconds in (8, 20)}


def check_no_reads_after_the_sizes(per_glue, sizes) -> None:
    for name in SELECTION:
        reads = per_glue.get(name, Counts())
        # finish reads the stage-2 per-modality counts (for last_stats) once, at the very end
        assert reads.reads == (1 if name == "seats_finish" else 0), f"{name}:\n{_where(reads)}"
    assert sizes.reads == 1, f"the layout sizes are read once per prefill:\n{_where(sizes)}"


def selection_ops(per_glue) -> int:
    return total({name: counts for name, counts in per_glue.items() if name in SELECTION}).launches


@pytest.mark.parametrize("seconds", [8, 20])
def test_stages_and_output_restore_read_nothing_from_the_device(clip_counts, seconds):
    per_glue, sizes = clip_counts[seconds]
    check_no_reads_after_the_sizes(per_glue, sizes)
    assert sum(per_glue["seats_select_stage2"].uploads.values()) == 0


def test_selection_glue_launches_a_bounded_count_that_does_not_grow_with_the_clip(clip_counts):
    (short, _), (long, _) = clip_counts[8], clip_counts[20]
    assert selection_ops(short) == selection_ops(long) <= SELECTION_OPS, {n: c.summary() for n, c in long.items()}
    # stage 1 runs one batch per group shape, not one per window: 10 windows cost what 4 do
    assert short["seats_select_stage1"].ops == long["seats_select_stage1"].ops


@pytest.mark.slow
def test_a_60_s_clip_reads_and_launches_what_a_20_s_clip_does(tiny_thinker, clip_counts):
    per_glue, sizes = clip_glue_counts(tiny_thinker, 60)
    check_no_reads_after_the_sizes(per_glue, sizes)
    assert selection_ops(per_glue) == selection_ops(clip_counts[20][0]) <= SELECTION_OPS


@pytest.mark.slow
def test_a_padded_batch_reads_no_more_than_one_sample(tiny_thinker):
    pad = token_ids_for_vocab(tiny_thinker.config.text_config.vocab_size)["pad"]
    samples = [synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=seconds, seed=seconds))
               for seconds in (4, 6)]
    check_no_reads_after_the_sizes(*glue_counts(tiny_thinker, batch_inputs(samples, pad, "left")))


@pytest.mark.xfail(strict=True, reason="SeatsCall.begin reads the device besides _read_sizes' one read (22 reads "
                                       "measured): the input_ids check (_why_not: boolean indexing, torch.equal), "
                                       "the media check, the stage-1 weights (_stage1_weights: any/sum/boolean-mask "
                                       "assignment; the adapters' repeat_interleave) and the per-sample counts "
                                       "that _read_sizes now provides")
def test_all_glue_of_a_prefill_reads_the_host_at_most_three_times(clip_counts):
    for seconds in (8, 20):
        per_glue, _ = clip_counts[seconds]
        everything = total(per_glue)
        assert everything.reads <= 3, f"{seconds} s clip:\n{_where(everything)}"
