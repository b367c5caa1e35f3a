"""generate() after a pruned prefill against the eager reference decoder (seats_generate)."""

import logging

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import seats_fx
from seats_fx import last_stats
from seats_fx.decode_step import decode_mask_shared_by_all_layers
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import seats_generate

from generate_helpers import (assert_step_logits_match, cache_lengths, compiled_copy, expected_cache_lengths,
                              fresh_copy, generate, generate_with_logits, switched_copy, towers_run_eagerly)

GRAPH_OPTIONS = [
    dict(progressive_drop_layers=(3, 5), late_block_layer=7),
    dict(progressive_drop_layers=(2,), late_block_layer=5, stage1=False),
    dict(progressive_drop_layers=(1, 6), stage3=False),
]
# the logits of every step, compiled vs eager reference; Inductor's kernels round differently
STEP_LOGITS_ATOL = {False: 1e-4, True: 1e-3}


def assert_generate_matches_reference(model, inputs, options, tokens=6, switch=None):
    """switch: an OptionSwitch of a compiled copy holding `options` (default: compiled_copy's own compile)."""
    if switch is None:
        generated, cache, logits = generate_with_logits(compiled_copy(model, options), inputs, tokens)
    else:
        with switch.selecting(options):
            generated, cache, logits = generate_with_logits(switch.compiled, inputs, tokens)
    stats = last_stats()
    reference = seats_generate(model, inputs, options, max_new_tokens=tokens)
    assert stats.pruned, stats.skipped
    assert torch.equal(stats.kept_positions, reference.prefill.kept_positions)
    assert_step_logits_match(logits, reference.logits, STEP_LOGITS_ATOL[options.get("inductor", True)])
    assert generated.tolist() == reference.tokens.tolist()
    # every layer cached what it processed in the prefill, then each generated token but the last
    expected = [sum(counts.values()) + tokens - 1 for counts in reference.prefill.layer_counts]
    assert expected == cache_lengths(reference.cache)
    assert cache_lengths(cache) == expected_cache_lengths(expected)
    return stats, cache


# one corner each run (the shortest clip, the paper's schedule; its options are those of the decode-recompile
# test below, so both share one compiled model); hypothesis varies the clip's content. The other option sets'
# corners (video without audio, the lowest retention, stage 3 off) are explicit cases of the slow search.
GENERATE_CORNERS = [
    (dict(GRAPH_OPTIONS[0], retention=0.1, inductor=False), ClipSpec(video_seconds=2)),
]


@pytest.mark.parametrize("options, clip", GENERATE_CORNERS, ids=["drops-3-5-fusion-7-2s"])
@settings(max_examples=1)
@given(seed=st.integers(0, 10_000))
def test_greedy_tokens_step_logits_and_cache_match_the_reference_decoder(tiny_thinker, options, clip, seed):
    clip = ClipSpec(video_seconds=clip.video_seconds, audio_seconds=clip.audio_seconds, seed=seed)
    assert_generate_matches_reference(tiny_thinker, synthetic_clip_inputs(tiny_thinker.config, clip), options)


# a few (options, retention) pairs, many clips, all run by one compiled copy (switched_copy: each pair runs its
# own rewrite of every graph, as test_backend.py checks for the forward switch; here each case is compared with
# the eager reference decoder as well); the cases below use these pairs where their options do not matter, so
# that one compile serves them all (they are one xdist group: make test-slow runs a group in one process).
WIDE_GENERATE_OPTIONS = [dict(GRAPH_OPTIONS[0], retention=0.2), dict(GRAPH_OPTIONS[1], retention=0.05),
                         dict(GRAPH_OPTIONS[2], retention=0.5), dict(GRAPH_OPTIONS[0], retention=0.1)]
SHARED_COMPILES = pytest.mark.xdist_group("test_generate-shared-compiles")
wide_clips = st.builds(ClipSpec, video_seconds=st.integers(1, 8), audio_seconds=st.sampled_from([None, 0, 1.5]),
                       seed=st.integers(0, 10_000))


@pytest.mark.slow
@SHARED_COMPILES
@settings(max_examples=12)  # each case is a prefill and 6 decode steps, compiled and in the reference
@given(options=st.sampled_from(WIDE_GENERATE_OPTIONS), clip=wide_clips)
@example(options=WIDE_GENERATE_OPTIONS[1], clip=ClipSpec(video_seconds=4, audio_seconds=0, seed=5))  # no stage 1
@example(options=WIDE_GENERATE_OPTIONS[2], clip=ClipSpec(video_seconds=6, seed=6))  # stage 3 off
def test_greedy_tokens_step_logits_and_cache_match_the_reference_decoder_wide(tiny_thinker, options, clip):
    assert_generate_matches_reference(tiny_thinker, synthetic_clip_inputs(tiny_thinker.config, clip),
                                      dict(options, inductor=False), switch=wide_switch(tiny_thinker))


def wide_switch(model):
    return switched_copy(model, WIDE_GENERATE_OPTIONS)


@pytest.mark.parametrize("inductor", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_generate_matches_reference_without_decode_recompiles_as_the_cache_grows(tiny_thinker, inductor):
    options = dict(GRAPH_OPTIONS[0], retention=0.1, inductor=inductor)
    for seconds, tokens in ((4, 12), (6, 5)):
        inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=seconds, seed=seconds))
        stats, cache = assert_generate_matches_reference(tiny_thinker, inputs, options, tokens)
        # the layers really hold different token counts (where decode steps get one mask per layer)
        assert len(set(cache_lengths(cache))) > 2 or decode_mask_shared_by_all_layers()
    backend = compiled_copy(tiny_thinker, options).seats_backend
    # seats_fx.compile traces dynamic shapes: decode graphs compile once or twice, then never again as the
    # cache grows or for the next prompt
    assert backend.decode_compiles <= 2, f"{backend.decode_compiles} decode-step compiles"


@pytest.mark.slow
def test_a_decode_step_makes_two_piece_calls_not_one_per_layer(tiny_thinker, monkeypatch):
    """A decode step's glue comes before its first layer, so its layers are one Inductor piece: each piece call
    has a fixed host cost (Dynamo's guards, the wrappers), paid per generated token. The same options as the
    Inductor case above: its compiled copy serves this test."""
    from seats_fx.passes.partition import InductorPiece

    options = dict(GRAPH_OPTIONS[0], retention=0.1, inductor=True)
    model = compiled_copy(tiny_thinker, options)
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=4))
    calls = []
    forward = InductorPiece.forward
    monkeypatch.setattr(InductorPiece, "forward", lambda self, *args: calls.append(1) or forward(self, *args))
    counts = []
    for tokens in (2, 6):
        calls.clear()
        generated, _ = generate(model, inputs, tokens)
        counts.append((len(calls), generated.shape[1]))
    assert last_stats().pruned and counts[1][1] > counts[0][1]
    per_step = (counts[1][0] - counts[0][0]) / (counts[1][1] - counts[0][1])
    assert per_step == 2, f"{per_step} piece calls per decode step (the rotary tables, then every layer)"


# with Inductor: test_backend.py::test_keep_everything_equals_plain_inductor (the same untouched graphs, lowered;
# make test-slow, not CI)
@pytest.mark.parametrize("inductor", [False])
def test_retention_one_generate_is_the_model(tiny_thinker, inductor):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=3))
    compiled = compiled_copy(tiny_thinker, dict(retention=1.0, inductor=inductor))
    generated, cache, logits = generate_with_logits(compiled, inputs, 16)
    assert not last_stats().pruned and "every token is kept" in last_stats().skipped
    # the same graphs, lowered the same way: plain Inductor (dynamic, as seats_fx.compile) or eager
    plain = towers_run_eagerly(fresh_copy(tiny_thinker))  # the fast encoders, as compiled_copy's
    if inductor:
        plain.compile(backend="inductor", dynamic=True)
    expected, plain_cache, plain_logits = generate_with_logits(plain, inputs, 16)
    assert generated.tolist() == expected.tolist()
    assert all(torch.equal(got, want) for got, want in zip(logits, plain_logits))
    assert cache_lengths(cache) == cache_lengths(plain_cache)


def test_beam_copies_of_a_prompt_get_its_stage1_weights(tiny_thinker):
    """generate(num_beams=k) encodes the video once and runs the prefill on k copies of the prompt: each copy
    weighs its tokens by the one recorded tower run (seats_fx.beam_copies), so stage 1 keeps for every copy
    what a batch-1 generate keeps. Before, the count mismatch (k times fewer weights than tokens) fell back
    to unweighted selection with a warning that advised seats_fx.compile, already in use."""
    options = GENERATE_CORNERS[0][0]  # its compiled copy is shared with the cases above
    model = compiled_copy(tiny_thinker, options)
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4, seed=5))
    generate(model, inputs, 2)
    single = last_stats()
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, num_beams=3, do_sample=False)
    beams = last_stats()
    assert beams.pruned and beams.stage1_signal == single.stage1_signal == {"audio": "encoder attention",
                                                                            "video": "encoder attention"}
    stage1 = beams.stage_positions[0]
    assert stage1.shape[0] == 3
    for copy in stage1:
        assert torch.equal(copy, single.stage_positions[0][0])


def test_bare_compile_names_seats_fx_compile_when_generate_encodes_video_eagerly(tiny_thinker, caplog):
    model = fresh_copy(tiny_thinker)
    model.compile(backend="seats", options=dict(GRAPH_OPTIONS[0], inductor=False))
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=2))
    with caplog.at_level(logging.INFO, logger="seats_fx"):
        generate(model, inputs, 3)
    stats = last_stats()
    # generate() encoded the video outside the compiled forward: stage 1 had no vision attention to weight
    # by, ran unweighted, and said how to get the full method
    assert stats.pruned and stats.stage1_signal.get("video", "").startswith("uniform"), stats.stage1_signal
    assert any("seats_fx.compile" in r.getMessage() for r in caplog.records if r.name == "seats_fx")


@pytest.mark.slow
@SHARED_COMPILES
def test_a_continued_prompt_over_a_filled_cache_is_not_pruned(tiny_thinker):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=2, audio_seconds=0))
    switch = wide_switch(tiny_thinker)
    compiled = switch.compiled
    ids = torch.randint(0, 900, (1, 6))
    with torch.no_grad(), switch.selecting(dict(WIDE_GENERATE_OPTIONS[1], inductor=False)):
        cache = compiled(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
        more = torch.cat([ids, inputs["input_ids"]], dim=1)
        compiled(**dict(inputs, input_ids=more, attention_mask=torch.ones_like(more)), past_key_values=cache,
                 use_cache=True)
    assert not last_stats().pruned and "KV cache already holds tokens" in last_stats().skipped


@pytest.mark.slow
@SHARED_COMPILES
def test_a_decode_step_over_a_foreign_pruned_cache_is_refused(tiny_thinker):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4))
    switch = wide_switch(tiny_thinker)
    compiled = switch.compiled
    with switch.selecting(dict(WIDE_GENERATE_OPTIONS[0], inductor=False)):
        _, cache = generate(compiled, inputs, 3)
        generate(compiled, synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=2)), 2)
        token = torch.ones(1, 1, dtype=torch.long)
        with pytest.raises(Exception, match="does not continue the last pruned prefill"), torch.no_grad():
            compiled(input_ids=token, past_key_values=cache, use_cache=True)


@pytest.mark.slow
def test_full_model_text_generate_prunes_its_thinker(tiny_thinker):
    from transformers import Qwen2_5OmniForConditionalGeneration

    from seats_fx.models.configs import tiny_qwen2_5_omni_full_config

    model = Qwen2_5OmniForConditionalGeneration(tiny_qwen2_5_omni_full_config()).eval()
    model.thinker.load_state_dict(tiny_thinker.state_dict())
    model.speaker_map = {"Chelsie": {}}  # loaded from the checkpoint's spk_dict.pt in real use
    assert model.has_talker
    options = dict(GRAPH_OPTIONS[0], retention=0.2, inductor=False)
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=5))
    seats_fx.compile(model, options)
    with torch.no_grad():
        sequences = model.generate(**inputs, generation_mode="text", thinker_max_new_tokens=5, thinker_do_sample=False)
    assert last_stats().pruned
    reference = seats_generate(tiny_thinker, inputs, options, max_new_tokens=5)
    assert sequences[:, inputs["input_ids"].shape[1]:].tolist() == reference.tokens.tolist()


@pytest.mark.slow
@SHARED_COMPILES
def test_image_only_generate_matches_the_reference(tiny_thinker):
    from seats_fx.models.synthetic import synthetic_image_inputs

    assert_generate_matches_reference(tiny_thinker, synthetic_image_inputs(tiny_thinker.config, 112, 168, seed=2),
                                      dict(WIDE_GENERATE_OPTIONS[0], inductor=False), tokens=4,
                                      switch=wide_switch(tiny_thinker))


@SHARED_COMPILES
def test_text_only_generate_is_untouched(tiny_thinker):
    ids = torch.randint(0, 900, (1, 16), generator=torch.Generator().manual_seed(4))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    # the first generate corner's options: its compiled model serves this prompt too
    generated, _, logits = generate_with_logits(compiled_copy(tiny_thinker, GENERATE_CORNERS[0][0]), inputs, 4)
    assert not last_stats().pruned and "no video or audio" in last_stats().skipped
    expected, _, plain_logits = generate_with_logits(tiny_thinker, inputs, 4)
    assert_step_logits_match(logits, plain_logits, STEP_LOGITS_ATOL[False])
    assert generated.tolist() == expected.tolist()


@pytest.mark.parametrize("options, message", [
    # stage 1 only: every layer cached the same count, so the continued prompt traces and seats refuses it
    pytest.param(dict(retention=0.2, stage2=False, stage3=False), "cannot continue a prompt over the pruned KV cache",
                 marks=pytest.mark.slow),
    # layers of different counts: transformers' one mask for all layers already fails while Dynamo traces
    (WIDE_GENERATE_OPTIONS[0], "must match the size"),
], ids=["one-width-cache", "ragged-cache"])
@SHARED_COMPILES
def test_continuing_a_prompt_over_a_pruned_cache_raises(tiny_thinker, options, message):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=2))
    compiled = compiled_copy(tiny_thinker, dict(options, inductor=False))
    with torch.no_grad():
        out = compiled.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    history = torch.cat([out.sequences, torch.randint(0, 900, (1, 5))], dim=1)
    with pytest.raises(Exception, match=message), torch.no_grad():
        compiled.generate(input_ids=history, attention_mask=torch.ones_like(history), past_key_values=out.past_key_values,
                          max_new_tokens=2, do_sample=False)
