"""Qwen3-Omni MoE thinker: the eager reference, backend="seats" and generate() against it."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seats_fx
from seats_fx import SeatsBackend, last_stats
from seats_fx.models import adapter_for
from seats_fx.models.configs import token_ids_for_vocab
from seats_fx.models.synthetic import (ClipSpec, batch_inputs, synthetic_audio_inputs, synthetic_clip_inputs,
                                       synthetic_image_inputs)
from seats_fx.reference import seats_forward, seats_generate

from generate_helpers import (cache_lengths, compiled_copy, expected_cache_lengths, fresh_copy, generate,
                              generate_with_logits, towers_run_eagerly)

OPTIONS = dict(progressive_drop_layers=(3, 5), late_block_layer=7, inductor=False)
PROMPTS = {
    "clip-with-audio": lambda c: synthetic_clip_inputs(c, ClipSpec(video_seconds=4, height=128, width=128)),
    "video-only": lambda c: synthetic_clip_inputs(c, ClipSpec(video_seconds=2, height=128, width=96, audio_seconds=0)),
    "audio-only": lambda c: synthetic_audio_inputs(c, 3.0),
    "image-only": lambda c: synthetic_image_inputs(c, 128, 96),
}
_prepared: dict = {}


def prepared(model, eager_towers: bool = True):
    """A copy whose deepstack step traces in one graph (what seats_fx.compile does), compiled once (dynamic).
    eager_towers: the copy's towers run eagerly (eager_towers.towers_run_eagerly: the compile traces the decoder
    only); False keeps the stock towers in the graph, where locate taps their attention."""
    if eager_towers not in _prepared:
        copy = fresh_copy(model)
        if eager_towers:
            towers_run_eagerly(copy)
        adapter_for(copy).prepare_for_compile()
        _prepared[eager_towers] = copy, torch.compile(copy, backend=SeatsBackend(dict(OPTIONS, retention=0.2)),
                                                      dynamic=True)
    return _prepared[eager_towers]


@pytest.mark.parametrize("name", list(PROMPTS))
def test_reference_keeping_everything_is_the_model(tiny_qwen3, name):
    inputs = PROMPTS[name](tiny_qwen3.config)
    with torch.no_grad():
        expected = tiny_qwen3(**inputs).logits
    result = seats_forward(tiny_qwen3, inputs, dict(retention=1.0, stage3=False))
    torch.testing.assert_close(result.logits, expected, atol=1e-5, rtol=0)


def test_deepstack_replacement_is_equal_in_value(tiny_qwen3):
    inputs = PROMPTS["clip-with-audio"](tiny_qwen3.config)
    model, _ = prepared(tiny_qwen3, eager_towers=False)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, tiny_qwen3(**inputs).logits)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_backend_matches_reference(tiny_qwen3, name):
    check_backend_matches_reference(tiny_qwen3, name, eager_towers=True)


@pytest.mark.slow  # and in make test-compat's smoke subset: the towers' graphs are what releases record differently
def test_backend_with_the_towers_in_the_graph_matches_reference(tiny_qwen3):
    check_backend_matches_reference(tiny_qwen3, "clip-with-audio", eager_towers=False)


def check_backend_matches_reference(tiny_qwen3, name: str, eager_towers: bool) -> None:
    inputs = PROMPTS[name](tiny_qwen3.config)
    _, compiled = prepared(tiny_qwen3, eager_towers)
    with torch.no_grad():
        logits = compiled(**inputs).logits
    stats = last_stats()
    reference = seats_forward(tiny_qwen3, inputs, dict(OPTIONS, retention=0.2))
    assert stats.pruned, stats.skipped
    assert len(stats.stage_positions) == len(reference.stages), [r.stage for r in reference.stages]
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after layer {expected.after_layer}"
    assert stats.layer_tokens == [sum(c.values()) for c in reference.layer_counts]
    torch.testing.assert_close(logits[:, reference.kept_positions[0]], reference.logits, atol=1e-4, rtol=0)


# the slow cases compiled with retention 0.2 (generate's draws, the batches) share one compiled copy, in one
# process (an xdist group: make test-slow)
SHARED_COMPILES = pytest.mark.xdist_group("test_qwen3_omni-shared-compiles")


@SHARED_COMPILES
@settings(max_examples=2)
@given(clip=st.builds(ClipSpec, video_seconds=st.sampled_from([2, 4, 6]), audio_seconds=st.sampled_from([None, 0]),
                      height=st.just(128), width=st.sampled_from([96, 128]), seed=st.integers(0, 10_000)),
       retention=st.sampled_from([0.05, 0.2, 0.5]))
@pytest.mark.slow
def test_generate_matches_reference_decoder(tiny_qwen3, clip, retention):
    options = dict(OPTIONS, retention=retention)
    inputs = synthetic_clip_inputs(tiny_qwen3.config, clip)
    generated, cache = generate(compiled_copy(tiny_qwen3, options), inputs, 4)  # compiled once per option set
    assert last_stats().pruned, last_stats().skipped
    reference = seats_generate(tiny_qwen3, inputs, options, max_new_tokens=4)
    assert generated.tolist() == reference.tokens.tolist()
    assert cache_lengths(cache) == expected_cache_lengths(cache_lengths(reference.cache))


@pytest.mark.slow
def test_windows_follow_the_configs_positions_per_second(tiny_qwen3):
    # a checkpoint may use another TMRoPE rate than transformers' default (25): windows must follow its config
    model = towers_run_eagerly(fresh_copy(tiny_qwen3))
    model.config.position_id_per_seconds = 13
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=6, height=128, width=96, seed=3))
    options = dict(OPTIONS, retention=0.2)
    reference = seats_forward(model, inputs, options)
    with torch.no_grad():
        seats_fx.compile(model, options)(**inputs)
    followed = last_stats()
    assert followed.pruned, followed.skipped
    for got, expected in zip(followed.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after layer {expected.after_layer}"
    # a bare compile reads the config from the module whose frame it compiles (the model's facts): the same
    # windows, the same picks
    bare = towers_run_eagerly(fresh_copy(tiny_qwen3))
    bare.config.position_id_per_seconds = 13
    adapter_for(bare).prepare_for_compile()
    with torch.no_grad():
        torch.compile(bare, backend=SeatsBackend(options), dynamic=True)(**inputs)
    assert last_stats().pruned
    for got, expected in zip(last_stats().stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"bare: {expected.stage} after layer {expected.after_layer}"
    # and the windows really are the config's: at the default 25 positions per second the picks differ
    default_rate = seats_forward(fresh_copy(tiny_qwen3), inputs, options)
    assert not all(torch.equal(a.kept_positions, b.kept_positions) for a, b in zip(default_rate.stages, reference.stages))


def test_retention_one_generate_is_the_model(tiny_qwen3):
    inputs = PROMPTS["clip-with-audio"](tiny_qwen3.config)
    model = seats_fx.compile(fresh_copy(tiny_qwen3), dict(retention=1.0, inductor=False))
    generated, _, logits = generate_with_logits(model, inputs, 16)
    assert not last_stats().pruned and "every token is kept" in last_stats().skipped
    expected, _, plain_logits = generate_with_logits(tiny_qwen3, inputs, 16)
    assert generated.tolist() == expected.tolist()
    assert all(torch.equal(got, want) for got, want in zip(logits, plain_logits))


def test_static_trace_of_the_moe_decoder_is_rewritten_like_the_reference(tiny_qwen3):
    # a static trace spells the MoE routing's length x top_k as an int: each boundary re-spells it from the
    # kept length (boundary._respell_length_multiples)
    model, _ = prepared(tiny_qwen3)
    inputs = PROMPTS["audio-only"](tiny_qwen3.config)
    options = dict(OPTIONS, retention=0.2)
    with torch.no_grad():
        logits = torch.compile(model, backend=SeatsBackend(options), dynamic=False)(**inputs).logits
    stats = last_stats()
    assert stats.pruned, stats.skipped
    reference = seats_forward(tiny_qwen3, inputs, options)
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after layer {expected.after_layer}"
    torch.testing.assert_close(logits[:, reference.kept_positions[0]], reference.logits, atol=1e-5, rtol=0)


BATCH_CLIPS = [ClipSpec(video_seconds=4, height=128, width=128, seed=1),
               ClipSpec(video_seconds=2, height=128, width=96, audio_seconds=1.0, seed=2)]


@pytest.mark.parametrize("side", [pytest.param("left", marks=pytest.mark.slow), "right"])
@SHARED_COMPILES
def test_batch_samples_keep_what_they_keep_alone(tiny_qwen3, side):
    options = dict(OPTIONS, retention=0.2)
    singles = [synthetic_clip_inputs(tiny_qwen3.config, clip) for clip in BATCH_CLIPS]
    batch = batch_inputs(singles, token_ids_for_vocab(tiny_qwen3.config.text_config.vocab_size)["pad"], side)
    with torch.no_grad():
        logits = compiled_copy(tiny_qwen3, options)(**batch).logits
    stats = last_stats()
    assert stats.pruned, stats.skipped
    width = batch["input_ids"].shape[1]
    for b, single in enumerate(singles):
        offset = width - single["input_ids"].shape[1] if side == "left" else 0
        kept = stats.kept_positions[b]
        kept = kept[kept >= 0]  # -1: entries that only fill this sample up to the batch's width
        assert bool((batch["attention_mask"][b, kept] == 1).all()), "a padding position was kept"
        alone = seats_forward(tiny_qwen3, single, options)
        assert torch.equal(kept - offset, alone.kept_positions[0])
        torch.testing.assert_close(logits[b, kept], alone.logits[0], atol=1e-4, rtol=0)


@pytest.mark.slow
@SHARED_COMPILES
def test_batch_generate_matches_each_sample_alone(tiny_qwen3):
    options = dict(OPTIONS, retention=0.2)
    pad = token_ids_for_vocab(tiny_qwen3.config.text_config.vocab_size)["pad"]
    singles = [synthetic_clip_inputs(tiny_qwen3.config, clip) for clip in BATCH_CLIPS]
    model = compiled_copy(tiny_qwen3, options)
    model.generation_config.pad_token_id = pad
    generated, cache = generate(model, batch_inputs(singles, pad), 4)
    assert last_stats().pruned, last_stats().skipped
    for b, single in enumerate(singles):
        alone = seats_generate(tiny_qwen3, single, options, max_new_tokens=4).tokens[0]
        assert generated[b].tolist() == alone.tolist(), f"sample {b}"
    assert len({layer.keys.shape[-2] for layer in cache.layers}) == 1  # padded: one width for every layer


@pytest.mark.slow
def test_full_model_text_generate_prunes_its_thinker(tiny_qwen3):
    from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration

    # text output never runs the talker; a tiny talker config is not needed to show the thinker is found
    model = Qwen3OmniMoeForConditionalGeneration(
        Qwen3OmniMoeConfig(thinker_config=tiny_qwen3.config.to_dict(), enable_audio_output=False)).eval()
    model.thinker.load_state_dict(tiny_qwen3.state_dict())
    options = dict(OPTIONS, retention=0.2)
    inputs = PROMPTS["clip-with-audio"](tiny_qwen3.config)
    seats_fx.compile(model, options)
    with torch.no_grad():
        sequences = model.generate(**inputs, generation_mode="text", thinker_max_new_tokens=4,
                                   thinker_do_sample=False)
    assert last_stats().pruned, last_stats().skipped
    reference = seats_generate(tiny_qwen3, inputs, options, max_new_tokens=4)
    assert sequences[:, inputs["input_ids"].shape[1]:].tolist() == reference.tokens.tolist()


@pytest.mark.slow
def test_backend_with_inductor_matches_reference(tiny_qwen3):
    # the audio track's near-identical tokens once made stage 1 depend on Inductor's last float bits
    options = dict(OPTIONS, retention=0.2, inductor=True)
    inputs = PROMPTS["clip-with-audio"](tiny_qwen3.config)
    with torch.no_grad():
        logits = seats_fx.compile(towers_run_eagerly(fresh_copy(tiny_qwen3)), options)(**inputs).logits
    stats = last_stats()
    reference = seats_forward(tiny_qwen3, inputs, options)
    assert stats.pruned, stats.skipped
    assert len(stats.stage_positions) == len(reference.stages), [r.stage for r in reference.stages]
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after layer {expected.after_layer}"
    torch.testing.assert_close(logits[:, reference.kept_positions[0]], reference.logits, atol=1e-4, rtol=0)
