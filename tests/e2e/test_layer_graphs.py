"""Qwen3-Omni under the headline usage: its deepstack step breaks the decoder into one Dynamo graph per layer,
and each layer's graph is rewritten on its own (passes.layer_piece) with the selection carried from graph to
graph (seats_fx.layerwise). Compared with the eager reference, as the whole-decoder path is."""

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx import last_stats
from seats_fx.host_reads import counting_glue, total
from seats_fx.layerwise import padding_from_mask
from seats_fx.models.configs import token_ids_for_vocab
from seats_fx.models.synthetic import ClipSpec, batch_inputs, synthetic_audio_inputs, synthetic_clip_inputs
from seats_fx.reference import seats_generate

from test_headline_usage import assert_pruned_like_the_reference, seats_warnings

from generate_helpers import (assert_step_logits_match, cache_lengths, expected_cache_lengths, fresh_copy,
                              generate_with_logits)

OPTIONS = dict(progressive_drop_layers=(3, 5), late_block_layer=7, retention=0.2, inductor=False)
CLIP = ClipSpec(video_seconds=4, height=128, width=128, seed=1)


def assert_like_the_reference(model, inputs, options, logits, atol=1e-5):
    """Returns last_stats() after checking what the whole-decoder path is held to (test_headline_usage), and
    that rows of pruned tokens carry no logits, as in a whole decoder."""
    stats = assert_pruned_like_the_reference(model, inputs, options, logits, atol)
    dropped = torch.ones(logits.shape[1], dtype=torch.bool)
    dropped[stats.kept_positions[0]] = False
    assert bool((logits[0, dropped] == 0).all())
    return stats


_compiled: dict = {}
# the cases that run one compiled model (headline_compiled) stay in one process of the slow tier
SHARED_COMPILES = pytest.mark.xdist_group("test_layer_graphs-headline")


def headline_compiled(model, options):
    """One `torch.compile(model, backend="seats", options=...)` per option set (default dynamic: the first
    call is a static trace), shared by the cases that only run it."""
    key = tuple(sorted(options.items()))
    if key not in _compiled:
        copy = fresh_copy(model)
        _compiled[key] = torch.compile(copy, backend="seats", options=options)
    return _compiled[key]


@SHARED_COMPILES
@pytest.mark.parametrize("clip", [CLIP, pytest.param(ClipSpec(video_seconds=2, height=128, width=96, audio_seconds=0,
                                                               seed=2), marks=pytest.mark.slow)],
                         ids=["with-audio", "video-only"])
def test_headline_usage_prunes_qwen3_layer_graphs_like_the_reference_and_warns_nothing(tiny_qwen3, clip, caplog):
    inputs = synthetic_clip_inputs(tiny_qwen3.config, clip)
    compiled = headline_compiled(tiny_qwen3, OPTIONS)
    with caplog.at_level(logging.INFO, logger="seats_fx"), torch.no_grad():
        logits = compiled(**inputs).logits
        # the second call of the same length runs the compiled graphs: the glue reads the device twice, as
        # a whole decoder's does (begin's layout, finish's stage counts)
        with counting_glue() as per_glue:
            again = compiled(**inputs).logits
    stats = assert_like_the_reference(tiny_qwen3, inputs, OPTIONS, logits)
    assert torch.equal(again, logits)
    assert stats.stage1_signal == ({"video": "encoder attention", "audio": "encoder attention"}
                                   if clip.audio_seconds != 0 else {"video": "encoder attention"})
    assert seats_warnings(caplog) == []
    rewritten = [r.getMessage() for r in caplog.records if "rewrote the graph of decoder layer" in r.getMessage()]
    assert len(rewritten) == tiny_qwen3.config.text_config.num_hidden_layers
    assert total(per_glue).reads == 2, {name: dict(c.host_reads) for name, c in per_glue.items()}
    assert set(per_glue) >= {"seats_layer_enter", "seats_layer_exit"}


@SHARED_COMPILES
def test_layer_graphs_compiled_for_one_copy_serve_another_like_the_reference(tiny_qwen3):
    # Dynamo guards a layer graph on the layer's index, not on the module: a second copy of the model runs the
    # first copy's layer graphs, so which layer a graph runs for is its place in the forward
    inputs = synthetic_clip_inputs(tiny_qwen3.config, CLIP)
    other = torch.compile(fresh_copy(tiny_qwen3), backend="seats", options=OPTIONS)
    with torch.no_grad():
        headline_compiled(tiny_qwen3, OPTIONS)(**inputs)  # the first copy's layer graphs (compiled once)
        logits = other(**inputs).logits
    assert_like_the_reference(tiny_qwen3, inputs, OPTIONS, logits)


@SHARED_COMPILES
@pytest.mark.slow
@settings(max_examples=3, deadline=None)
@given(clip=st.builds(ClipSpec, video_seconds=st.sampled_from([2, 4, 6]), audio_seconds=st.sampled_from([None, 0]),
                      height=st.just(128), width=st.sampled_from([96, 128]), seed=st.integers(0, 10_000)),
       retention=st.sampled_from([0.05, 0.2, 0.5]))
def test_layer_graphs_keep_what_the_reference_keeps_over_lengths_and_ratios(tiny_qwen3, clip, retention):
    # retention is read by the glue only: one compile serves every ratio, and new lengths trace dynamically
    options = dict(OPTIONS, retention=retention)
    inputs = synthetic_clip_inputs(tiny_qwen3.config, clip)
    with torch.no_grad():
        logits = headline_compiled(tiny_qwen3, options)(**inputs).logits
    assert_like_the_reference(tiny_qwen3, inputs, options, logits)


@pytest.mark.slow
def test_layer_graphs_with_inductor_prune_like_the_reference(tiny_qwen3, caplog):
    options = dict(OPTIONS, inductor=True)
    inputs = synthetic_clip_inputs(tiny_qwen3.config, CLIP)
    with caplog.at_level(logging.WARNING, logger="seats_fx"), torch.no_grad():
        logits = headline_compiled(tiny_qwen3, options)(**inputs).logits
    assert_like_the_reference(tiny_qwen3, inputs, options, logits, atol=1e-4)
    assert seats_warnings(caplog) == []


@pytest.mark.slow
@pytest.mark.parametrize("inductor", [False, True], ids=["eager", "inductor"])
def test_model_compile_then_generate_prunes_qwen3_like_the_reference(tiny_qwen3, inductor, caplog):
    """With Inductor under torch 2.11 (CPU) the second length once failed in Inductor's C++ code generation, in
    transformers' mask graphs (seats_fx/inductor_patches.py)."""
    model = fresh_copy(tiny_qwen3)
    options = dict(OPTIONS, inductor=inductor)
    model.compile(backend="seats", options=options)
    for clip in (ClipSpec(video_seconds=4, height=128, width=128, seed=6),
                 ClipSpec(video_seconds=6, height=128, width=96, seed=2)):  # a second length: a dynamic trace
        inputs = synthetic_clip_inputs(tiny_qwen3.config, clip)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="seats_fx"):
            generated, cache, logits = generate_with_logits(model, inputs, 6)
        stats = last_stats()
        assert stats.pruned and stats.layer_counts[-1]["video"] == 0, stats.skipped
        # later transformers 5.x encode images and videos before the prefill: stage 1 then has no vision
        # attention, says so once, and the reference runs with the same signal
        unweighted = tuple(kind for kind, signal in stats.stage1_signal.items() if signal.startswith("uniform"))
        assert stats.stage1_signal["audio"] == "encoder attention"
        assert all("seats_fx.compile" in line for line in seats_warnings(caplog))
        reference = seats_generate(tiny_qwen3, inputs, options, max_new_tokens=6, unweighted=unweighted)
        assert torch.equal(stats.kept_positions, reference.prefill.kept_positions)
        assert generated.tolist() == reference.tokens.tolist()
        assert cache_lengths(cache) == expected_cache_lengths(cache_lengths(reference.cache))
        assert_step_logits_match(logits, reference.logits, 1e-4)
        with torch.no_grad():
            keep_all = tiny_qwen3(**inputs).logits[:, -1]
        assert not torch.allclose(logits[0], keep_all, atol=1e-4)  # the first step saw the pruned prompt


def _run_with_eager_layer(model, layer_index, inputs):
    layers = [m for m in model.modules() if type(m).__name__ == "Qwen3OmniMoeThinkerTextDecoderLayer"]
    layer = layers[layer_index]
    layer.forward = torch._dynamo.disable(layer.forward)  # what a layer past Dynamo's recompile limit does
    with torch.no_grad():
        torch.compile(model, backend="seats", options=OPTIONS)(**inputs)


@pytest.mark.slow
def test_a_layer_run_outside_its_graph_is_an_error_never_a_mixed_model(tiny_qwen3):
    inputs = synthetic_clip_inputs(tiny_qwen3.config, ClipSpec(video_seconds=2, height=128, width=96, seed=3))
    torch._dynamo.reset()
    with pytest.raises(RuntimeError, match="decoder layer 4 ran through its compiled graph as layer 3 of its forward"):
        _run_with_eager_layer(fresh_copy(tiny_qwen3), 3, inputs)
    torch._dynamo.reset()
    last = tiny_qwen3.config.text_config.num_hidden_layers - 1
    with pytest.raises(RuntimeError, match=f"the lm_head ran after decoder layer {last - 1}"):
        _run_with_eager_layer(fresh_copy(tiny_qwen3), last, inputs)
    torch._dynamo.reset()


@SHARED_COMPILES
@pytest.mark.slow
def test_a_batch_under_layer_graphs_is_left_unpruned_with_one_warning(tiny_qwen3, caplog):
    clips = [ClipSpec(video_seconds=4, height=128, width=128, seed=1), ClipSpec(video_seconds=2, height=128,
                                                                                width=96, seed=2)]
    singles = [synthetic_clip_inputs(tiny_qwen3.config, clip) for clip in clips]
    inputs = batch_inputs(singles, token_ids_for_vocab(tiny_qwen3.config.text_config.vocab_size)["pad"], "left")
    with caplog.at_level(logging.WARNING, logger="seats_fx"), torch.no_grad():
        logits = headline_compiled(tiny_qwen3, OPTIONS)(**inputs).logits
        expected = tiny_qwen3(**inputs).logits
    lines = seats_warnings(caplog)
    assert len(lines) == 1 and "one prompt at a time" in lines[0], lines
    assert not last_stats().pruned
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_padding_from_mask_reads_the_last_query_row(kind):
    valid = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    allowed = causal[None, None] & valid[:, None, None, :].bool()
    mask = allowed if kind == "bool" else torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    assert torch.equal(padding_from_mask(mask), valid)
    assert padding_from_mask(None) is None


@SHARED_COMPILES
def test_text_only_qwen3_prompt_is_left_unpruned_and_unchanged(tiny_qwen3):
    # no deepstack, so one whole decoder graph; Qwen3-Omni's float positions must not turn begin's host
    # layout into floats on the way to "no video or audio tokens"
    ids = torch.randint(0, 900, (1, 20))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        logits = headline_compiled(tiny_qwen3, OPTIONS)(**inputs).logits
        expected = tiny_qwen3(**inputs).logits
    stats = last_stats()
    assert not stats.pruned and "no video or audio" in stats.skipped
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@SHARED_COMPILES
def test_headline_usage_prunes_an_audio_only_qwen3_prompt_without_warnings(tiny_qwen3, caplog):
    # no video, no deepstack: one whole decoder graph, traced static first (length x top_k re-spelled)
    inputs = synthetic_audio_inputs(tiny_qwen3.config, 3.0)
    with caplog.at_level(logging.WARNING, logger="seats_fx"), torch.no_grad():
        logits = headline_compiled(tiny_qwen3, OPTIONS)(**inputs).logits
    assert_like_the_reference(tiny_qwen3, inputs, OPTIONS, logits)
    assert seats_warnings(caplog) == []


@SHARED_COMPILES
def test_a_forward_interrupted_between_layers_does_not_leak_into_the_next(tiny_qwen3):
    from seats_fx.layerwise import LayerwiseForward, end_forward, start_forward

    inputs = synthetic_clip_inputs(tiny_qwen3.config, CLIP)
    compiled = headline_compiled(tiny_qwen3, OPTIONS)
    # what an error in the model's eager code after layer 2's graph leaves behind: a forward expecting layer 3
    start_forward(LayerwiseForward(call=None, positions=None, why_not=None, next_layer=3))
    try:
        with torch.no_grad():
            logits = compiled(**inputs).logits
    finally:
        end_forward()
    # the next forward starts afresh at its layer 0: its rotary embedding recorded new positions, and layer 0's
    # graph runs for its own module (either rule alone restarts it; without both this raises)
    assert_like_the_reference(tiny_qwen3, inputs, OPTIONS, logits)
