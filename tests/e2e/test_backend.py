"""backend="seats" against the eager reference, on a tiny random-weight Qwen2.5-Omni thinker."""

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx import SeatsBackend, last_stats
from seats_fx.models.synthetic import ClipSpec, synthetic_audio_inputs, synthetic_clip_inputs, synthetic_image_inputs
from seats_fx.reference import seats_forward
from seats_fx.runtime import set_last_stats

from eager_towers import towers_run_eagerly
from option_switch import switch_for

# the graph depends on these (block boundaries, fusion layer, stage switches); retention does not
# an early late block leaves fewer layers to average the retention over: stage 1 must keep more
# (encoder_ratio_scale) for the targets below to be reachable (StagePlan refuses unreachable ones)
GRAPH_OPTIONS = [
    dict(progressive_drop_layers=(3, 5), late_block_layer=7),
    dict(progressive_drop_layers=(2,), late_block_layer=5, encoder_ratio_scale=2.5),
    dict(progressive_drop_layers=(4, 5, 6), late_block_layer=8, stage1=False),
    dict(progressive_drop_layers=(1, 6), stage3=False),
    dict(stage2=False, late_block_layer=4, encoder_ratio_scale=3.0),
    # baselines are configurations of the same passes: FastV (one global top-k), random pre-LLM picks
    dict(progressive_drop_layers=(2,), stage1=False, stage3=False, stage2_allocation="global"),
    dict(stage2=False, stage3=False, encoder_ratio_scale=1.0, stage1_selector="random", seed=7),
]
_compiled: dict = {}


def compiled_model(model, options: dict, dynamic=True):
    """One compiled wrapper per option set (compiling is the slow part; inputs vary freely)."""
    key = (id(model), tuple(sorted(options.items())), dynamic)
    if key not in _compiled:
        backend = SeatsBackend(options)
        _compiled[key] = (torch.compile(model, backend=backend, dynamic=dynamic), backend)
    return _compiled[key]


def run_compiled(model, inputs, options, dynamic=True, compiled=None):
    """compiled: a callable that runs `model` compiled with `options` (default: its own compile)."""
    backend = None
    if compiled is None:
        compiled, backend = compiled_model(model, options, dynamic)
    set_last_stats(None)
    with torch.no_grad():
        logits = compiled(**inputs).logits
    stats = last_stats()
    assert stats is not None, "the decoder graph did not run through the seats backend"
    return logits, stats, backend


def assert_matches_reference(model, inputs, options, atol=1e-4, dynamic=True, compiled=None):
    logits, stats, _ = run_compiled(model, inputs, options, dynamic, compiled)
    reference = seats_forward(model, inputs, options)
    assert stats.pruned, stats.skipped
    assert [(s, layer) for s, layer, _ in stats.stages] == [(r.stage, r.after_layer) for r in reference.stages]
    assert len(stats.stage_positions) == len(reference.stages), (len(stats.stage_positions),
                                                                 [r.stage for r in reference.stages])
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after layer {expected.after_layer}"
    # the layers really ran on the pruned lengths (measured from the tensors, not from the plan)
    assert stats.layer_tokens == [sum(c.values()) for c in reference.layer_counts]
    assert stats.layer_counts == reference.layer_counts
    kept = reference.kept_positions[0]
    torch.testing.assert_close(logits[:, kept], reference.logits, atol=atol, rtol=0)
    dropped = torch.ones(logits.shape[1], dtype=torch.bool)
    dropped[kept] = False
    assert bool((logits[:, dropped] == 0).all())
    return stats


# Each option set is one dynamic compile (the towers run eagerly: a new clip structure costs no retrace), so
# the default suite draws a few clips of any structure per set; the slow suite searches 200. The other cases
# of this module use these sets where their options do not matter, so one compile serves them all (the slow
# ones are one xdist group: make test-slow runs a group in one process).
EAGER_COMPILES = pytest.mark.xdist_group("test_backend-eager-compiles")
OPTION_SETS = [dict(GRAPH_OPTIONS[0], retention=0.2), dict(GRAPH_OPTIONS[1], retention=0.3),
               dict(GRAPH_OPTIONS[2], retention=0.05), dict(GRAPH_OPTIONS[3], video_retention=0.2,
                                                             audio_retention=0.5)]
clips = st.builds(ClipSpec, video_seconds=st.integers(1, 12), audio_seconds=st.sampled_from([None, 1.0, 3.5, 7.0]),
                  seed=st.integers(0, 10_000))


# the paper's schedule in the default suite (and in make test-compat's smoke subset); every set, 200 cases, below
@pytest.mark.parametrize("options", [OPTION_SETS[0]], ids=["drops-3-5"])
@settings(max_examples=3)
@given(clip=clips)
def test_kept_indices_and_logits_match_reference_without_inductor(thinker_eager_towers, options, clip):
    options = dict(options, inductor=False)
    assert_matches_reference(thinker_eager_towers, synthetic_clip_inputs(thinker_eager_towers.config, clip), options)


# The slow search draws from five option sets, all run from one trace of the model (OptionSwitch: each set
# runs the graphs its own compile would, which the next test checks): one trace and one recompile per new clip
# length, instead of five of each
WIDE_OPTION_SETS = [dict(options, inductor=False)
                    for options in OPTION_SETS + [dict(GRAPH_OPTIONS[4], retention=0.15)]]


@pytest.mark.slow
@EAGER_COMPILES
@settings(max_examples=200)
@given(options=st.sampled_from(WIDE_OPTION_SETS), clip=clips)
def test_kept_indices_and_logits_match_reference_without_inductor_wide(thinker_eager_towers, options, clip):
    assert_matches_reference(thinker_eager_towers, synthetic_clip_inputs(thinker_eager_towers.config, clip), options,
                             compiled=switch_for(thinker_eager_towers, WIDE_OPTION_SETS).for_options(options))


@pytest.mark.slow
@EAGER_COMPILES  # the option set the group's other cases compile on their own
def test_one_trace_for_all_option_sets_runs_what_each_sets_own_compile_runs(thinker_eager_towers):
    options, other = WIDE_OPTION_SETS[0], WIDE_OPTION_SETS[2]
    switch = switch_for(thinker_eager_towers, WIDE_OPTION_SETS)
    for clip in (ClipSpec(video_seconds=5, audio_seconds=3.5, seed=1), ClipSpec(video_seconds=3, seed=2)):
        inputs = synthetic_clip_inputs(thinker_eager_towers.config, clip)
        run_compiled(thinker_eager_towers, inputs, other, compiled=switch.for_options(other))  # the other set first
        switched, switched_stats, _ = run_compiled(thinker_eager_towers, inputs, options,
                                                   compiled=switch.for_options(options))
        own, own_stats, _ = run_compiled(thinker_eager_towers, inputs, options)
        assert switched_stats.pruned and torch.equal(switched, own)
        assert [stage[:2] for stage in switched_stats.stages] == [stage[:2] for stage in own_stats.stages]
        assert switched_stats.layer_counts == own_stats.layer_counts
        for got, expected in zip(switched_stats.stage_positions, own_stats.stage_positions, strict=True):
            assert torch.equal(got, expected)


# with Inductor: the option set whose pieces differ most from the first one's, which the next test lowers
# over three lengths (media kept to the last layer, no stage-3 cut; the other sets run the same kinds of
# pieces at other layers). An Inductor compile is ~50 s here, so the clips keep one structure (video with
# audio: one dynamic compile) and vary length and content; the selection itself is the same code as without
# Inductor, searched over 200 cases above.
inductor_clips = st.builds(ClipSpec, video_seconds=st.integers(2, 12), audio_seconds=st.just(3.5),
                           seed=st.integers(0, 10_000))


@pytest.mark.slow
@pytest.mark.parametrize("options", [OPTION_SETS[3]], ids=["no-stage3"])
@settings(max_examples=2)
@given(clip=inductor_clips)
def test_kept_indices_and_logits_match_reference_with_inductor(thinker_eager_towers, options, clip):
    assert_matches_reference(thinker_eager_towers, synthetic_clip_inputs(thinker_eager_towers.config, clip), options)
    _, backend = compiled_model(thinker_eager_towers, options)
    assert backend.decoder_compiles == 1, f"{backend.decoder_compiles} decoder compiles for one clip structure"


@pytest.mark.slow
def test_pieces_with_inductors_cpp_wrapper_match_reference(thinker_eager_towers):
    """SeatsConfig.cpp_wrapper: the same pieces, launched from C++; kept indices and logits still the
    reference's, over two clip lengths (dynamic shapes through the C++ wrapper)."""
    options = dict(GRAPH_OPTIONS[0], retention=0.1, cpp_wrapper=True)
    for seconds in (4, 9):
        inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=seconds, seed=seconds))
        assert_matches_reference(thinker_eager_towers, inputs, options)


def test_inductor_matches_reference_and_recompiles_at_most_once_over_three_lengths(thinker_eager_towers):
    options = dict(GRAPH_OPTIONS[0], retention=0.1)
    for seconds in (4, 7, 10):
        inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=seconds))
        stats = assert_matches_reference(thinker_eager_towers, inputs, options, dynamic=None)
        assert stats.layer_tokens[-1] == stats.input_counts["text"]
    _, backend = compiled_model(thinker_eager_towers, options, dynamic=None)  # torch.compile's default
    assert backend.decoder_compiles <= 2, f"{backend.decoder_compiles} decoder compiles for 3 lengths"


@pytest.mark.slow
@EAGER_COMPILES
def test_position_ids_passed_in_are_pruned_too(thinker_eager_towers):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=6))
    positions, _ = thinker_eager_towers.model.get_rope_index(
        inputs["input_ids"], None, inputs["video_grid_thw"], inputs["attention_mask"], True,
        inputs["feature_attention_mask"].sum(-1), inputs["video_second_per_grid"])
    options = dict(OPTION_SETS[0], inductor=False)
    for rows in (positions, torch.cat([torch.arange(positions.shape[-1]).view(1, 1, -1), positions])):
        compiled, _ = compiled_model(thinker_eager_towers, options)
        with torch.no_grad():
            logits = compiled(**inputs, position_ids=rows).logits
        stats = last_stats()
        reference = seats_forward(thinker_eager_towers, inputs, options)
        assert stats.pruned and torch.equal(stats.kept_positions, reference.kept_positions)
        torch.testing.assert_close(logits[:, -1], reference.last_logits, atol=1e-4, rtol=0)


@pytest.mark.slow  # keep-everything without Inductor: test_generate.py; pruned with Inductor: above
def test_keep_everything_equals_plain_inductor(thinker_eager_towers):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=4))
    logits, stats, _ = run_compiled(thinker_eager_towers, inputs, dict(retention=1.0, stage3=False), dynamic=False)
    # keep-everything leaves the graphs untouched (no stage runs), and says so
    assert not stats.pruned and "retention 1.0" in stats.skipped
    with torch.no_grad():
        expected = torch.compile(thinker_eager_towers, backend="inductor")(**inputs).logits
        eager = thinker_eager_towers(**inputs).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, eager, atol=1e-4, rtol=0)


def test_text_only_prompt_is_left_unpruned(thinker_eager_towers):
    ids = torch.randint(0, 900, (1, 20))
    logits, stats, _ = run_compiled(thinker_eager_towers, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                    dict(GRAPH_OPTIONS[0], inductor=False))
    assert not stats.pruned and "no video or audio" in stats.skipped
    with torch.no_grad():
        expected = thinker_eager_towers(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
@EAGER_COMPILES
def test_second_compile_with_other_options_obeys_them_without_cross_talk(thinker_eager_towers):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=6))
    first = dict(OPTION_SETS[1], inductor=False)
    second = dict(OPTION_SETS[0], inductor=False)
    for options in (first, second, first):
        _, stats, _ = run_compiled(thinker_eager_towers, inputs, options)
        reference = seats_forward(thinker_eager_towers, inputs, options)
        assert stats.layer_counts == reference.layer_counts
    assert SeatsBackend(first).manager.uuid() != SeatsBackend(second).manager.uuid()


def test_unsupported_decoder_is_left_untouched_with_one_log_line(caplog):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config

    config = tiny_qwen2_5_omni_config(TinySpec(num_layers=3))
    config.text_config.use_sliding_window = True
    config.text_config.sliding_window = 16
    config.text_config.layer_types = ["full_attention", "sliding_attention", "full_attention"]
    torch.manual_seed(0)
    model = towers_run_eagerly(Qwen2_5OmniThinkerForConditionalGeneration(config).eval())  # the decoder is refused
    inputs = synthetic_clip_inputs(config, ClipSpec(video_seconds=2))
    with caplog.at_level(logging.WARNING, logger="seats_fx"), torch.no_grad():
        logits = torch.compile(model, backend=SeatsBackend({"inductor": False}))(**inputs).logits
        expected = model(**inputs).logits
    lines = [r.getMessage() for r in caplog.records if r.name == "seats_fx"]
    assert len(lines) == 1 and "left unpruned" in lines[0] and "attention masks" in lines[0]
    assert not last_stats().pruned and "attention masks" in last_stats().skipped
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="strict"), torch.no_grad():
        torch.compile(model, backend=SeatsBackend({"inductor": False, "strict": True}))(**inputs)


def test_bad_options_raise_with_the_known_ones(thinker_eager_towers):
    tiny_thinker = thinker_eager_towers
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=2))
    torch._dynamo.reset()
    with pytest.raises(Exception, match="known options"), torch.no_grad():
        torch.compile(tiny_thinker, backend="seats", options={"retension": 0.1})(**inputs)
    with pytest.raises(Exception, match=r"late_block_layer must be in \[2, 8\]"), torch.no_grad():
        torch.compile(tiny_thinker, backend="seats", options={"late_block_layer": 12})(**inputs)


@pytest.mark.slow
@EAGER_COMPILES
def test_inputs_embeds_without_input_ids_is_left_unpruned_and_says_why(thinker_eager_towers):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=4))
    embeds = thinker_eager_towers.get_input_embeddings()(inputs["input_ids"]).detach()
    options = dict(OPTION_SETS[0], inductor=False)
    compiled, _ = compiled_model(thinker_eager_towers, options)
    run_compiled(thinker_eager_towers, inputs, options)  # leaves a consumed tap behind
    set_last_stats(None)
    with torch.no_grad():
        logits = compiled(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
        expected = thinker_eager_towers(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    stats = last_stats()
    assert not stats.pruned and "input_ids" in stats.skipped
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("clip", [ClipSpec(video_seconds=6, audio_seconds=0), ClipSpec(video_seconds=1)],
                         ids=["video-without-audio", "half-window"])
@EAGER_COMPILES
def test_partial_clips_match_reference(thinker_eager_towers, clip):
    assert_matches_reference(thinker_eager_towers, synthetic_clip_inputs(thinker_eager_towers.config, clip),
                             dict(OPTION_SETS[0], inductor=False))


@pytest.mark.parametrize("build", [lambda c: synthetic_image_inputs(c), lambda c: synthetic_image_inputs(c, 56, 84, 3),
                                   lambda c: synthetic_audio_inputs(c, 6.0), lambda c: synthetic_audio_inputs(c, 0.7)],
                         ids=["image-only", "small-image", "audio-only", "one-window-audio"])
@EAGER_COMPILES
def test_single_modality_prompts_match_reference(thinker_eager_towers, build):
    inputs = build(thinker_eager_towers.config)
    stats = assert_matches_reference(thinker_eager_towers, inputs, dict(OPTION_SETS[0], inductor=False))
    present = [name for name in ("video", "audio") if stats.input_counts[name]]
    assert len(present) == 1 and stats.layer_counts[-1][present[0]] == 0
