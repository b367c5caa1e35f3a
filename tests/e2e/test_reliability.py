"""Reliability: the README's table "What seats does with ..." has one test per row, here or where named there."""

import gc
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seats_fx
from seats_fx import SeatsBackend, SeatsConfig, last_stats
from seats_fx.models import adapter_for
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.reference import seats_forward
from seats_fx.runtime import set_last_stats
from seats_fx.stage_plan import StagePlan

from generate_helpers import fresh_copy, towers_run_eagerly
from option_switch import switch_for
from test_backend import GRAPH_OPTIONS, assert_matches_reference

OPTIONS = dict(GRAPH_OPTIONS[0], inductor=False)


def _value_error_in(error: BaseException) -> ValueError | None:
    """Dynamo wraps a backend's exception; returns the ValueError raised underneath, if any."""
    while error is not None:
        if isinstance(error, ValueError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _seats_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "seats_fx"]


# ---- inputs -----------------------------------------------------------------------------------------
def test_very_short_audio_track_in_a_clip(thinker_eager_towers):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=4, audio_seconds=0.3, seed=2))
    assert_matches_reference(thinker_eager_towers, inputs, dict(OPTIONS, retention=0.2), dynamic=True)


@pytest.mark.slow
def test_a_retention_that_gives_some_groups_no_budget(thinker_eager_towers):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=8, seed=4))
    options = dict(OPTIONS, retention=0.01)
    stats = assert_matches_reference(thinker_eager_towers, inputs, options, dynamic=True)
    layout = adapter_for(thinker_eager_towers).encode(inputs, 2.0).layout
    last_stage2 = [p for (stage, _, _), p in zip(stats.stages, stats.stage_positions) if stage == "stage2"][-1][0]
    groups = {(int(w), int(m)) for w, m in zip(layout.window[0], layout.modality[0]) if int(m) in (VIDEO, AUDIO)}
    kept = {(int(layout.window[0, p]), int(layout.modality[0, p])) for p in last_stage2}
    assert groups - kept, "expected at least one (window, modality) group with a budget of 0"
    text = torch.nonzero(layout.modality[0] == 0).flatten()
    assert set(text.tolist()) <= set(last_stage2.tolist())


# ---- options ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,field,allowed", [
    ({"retension": 0.1}, "known options", "retention"),
    ({"retention": 1.5}, "retention", "(0, 1]"),
    ({"retention": 0.0}, "retention", "(0, 1]"),
    ({"late_block_layer": 12}, "late_block_layer", "[2, 8]"),
    ({"progressive_drop_layers": (5, 3)}, "progressive_drop_layers", "strictly increasing"),
    ({"progressive_drop_layers": (3, 9), "late_block_layer": None, "stage3": False}, "progressive_drop_layers",
     "[1, 7]"),
    ({"retention": "0.1"}, "retention", "a number"),
    ({"stage2": 1}, "stage2", "a bool"),
    ({"stage1_selector": "best"}, "stage1_selector", "weighted_diversity"),
], ids=["unknown-key", "ratio-above-1", "ratio-0", "fusion-beyond-depth", "unsorted-blocks", "block-out-of-range",
        "ratio-as-string", "switch-as-int", "unknown-selector"])
def test_invalid_options_raise_value_error_naming_field_range_and_value(thinker_eager_towers, options, field, allowed):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=2))
    torch._dynamo.reset()
    with pytest.raises(Exception) as raised, torch.no_grad():
        torch.compile(thinker_eager_towers, backend="seats", options=options)(**inputs)
    error = _value_error_in(raised.value)
    assert error is not None, f"expected a ValueError, got {raised.value!r}"
    message = str(error)
    value = next(iter(options.values())) if field != "known options" else "retension"
    assert field in message and allowed in message and repr(value).strip("'") in message, message


# ---- models seats does not prune --------------------------------------------------------------------
def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def _tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


class _SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x).softmax(-1)


@pytest.mark.parametrize("build,inputs", [
    (_tiny_llama, lambda: {"input_ids": torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))}),
    (_tiny_qwen2, lambda: {"input_ids": torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))}),
    (lambda: _SmallNet().eval(), lambda: {"x": torch.randn(3, 8, generator=torch.Generator().manual_seed(0))}),
], ids=["llama", "qwen2", "non-hf-module"])
def test_unsupported_models_compile_unchanged_with_one_log_line(build, inputs, caplog):
    torch.manual_seed(0)
    model, kwargs = build(), inputs()
    with torch.no_grad():
        expected = model(**kwargs)
        torch._dynamo.reset()
        with caplog.at_level(logging.WARNING, logger="seats_fx"):
            compiled = torch.compile(model, backend=SeatsBackend({"inductor": False}))
            got = compiled(**kwargs)
            got = compiled(**kwargs)
    expected = expected.logits if hasattr(expected, "logits") else expected
    got = got.logits if hasattr(got, "logits") else got
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    lines = _seats_lines(caplog)
    assert len(lines) == 1 and "not a Qwen-Omni thinker" in lines[0], lines
    torch._dynamo.reset()
    with pytest.raises(Exception, match="not a Qwen-Omni thinker.*strict"), torch.no_grad():
        torch.compile(model, backend=SeatsBackend({"inductor": False, "strict": True}))(**kwargs)


# ---- dtypes and grad modes --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)],
                         ids=["bf16", "fp16"])
def test_half_precision_models_and_inputs_match_the_reference(thinker_eager_towers, dtype):
    model = towers_run_eagerly(fresh_copy(thinker_eager_towers)).to(dtype)
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4, seed=3))
    inputs = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in inputs.items()}
    options = dict(OPTIONS, retention=0.2)
    with torch.no_grad():
        logits = torch.compile(model, backend=SeatsBackend(options), dynamic=True)(**inputs).logits
    stats = last_stats()
    reference = seats_forward(model, inputs, options)
    assert stats.pruned, stats.skipped
    assert logits.dtype == dtype
    assert len(stats.stage_positions) == len(reference.stages), (stats.stages, [r.stage for r in reference.stages])
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), expected.stage
    torch.testing.assert_close(logits[:, reference.kept_positions[0]], reference.logits, atol=2e-2, rtol=0)


@pytest.mark.parametrize("mode", [pytest.param(torch.no_grad, marks=pytest.mark.slow), torch.inference_mode],
                         ids=["no_grad", "inference_mode"])  # every other test runs under no_grad
def test_no_grad_and_inference_mode_prune_alike(thinker_eager_towers, mode):
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=4, seed=6))
    options = dict(OPTIONS, retention=0.2)
    with mode():
        logits = torch.compile(thinker_eager_towers, backend=SeatsBackend(options), dynamic=True)(**inputs).logits
    assert last_stats().pruned, last_stats().skipped
    reference = seats_forward(thinker_eager_towers, inputs, options)
    torch.testing.assert_close(logits[:, reference.kept_positions[0]], reference.logits, atol=1e-4, rtol=0)


def test_under_autocast_a_float32_model_is_pruned_like_the_reference_under_it(thinker_eager_towers):
    """torch.autocast (bf16 over fp32 weights, a common way to serve): kept positions equal the eager
    reference's under the same autocast, logits too; before, the lm_head over kept rows raised (its fp32
    buffer against autocast's bf16 linear)."""
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=4, seed=7))
    options = dict(OPTIONS, retention=0.2)
    compiled = torch.compile(thinker_eager_towers, backend=SeatsBackend(options), dynamic=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = compiled(**inputs).logits
        reference = seats_forward(thinker_eager_towers, inputs, options)
    stats = last_stats()
    assert stats.pruned, stats.skipped
    for got, expected in zip(stats.stage_positions, reference.stages, strict=True):
        assert torch.equal(got, expected.kept_positions), expected.stage
    assert logits.dtype == reference.logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits[:, reference.kept_positions[0]], reference.logits, atol=2e-2, rtol=0)


def test_training_is_never_pruned_and_gradients_are_the_models(thinker_eager_towers, caplog):
    model = fresh_copy(thinker_eager_towers).train()
    plain = fresh_copy(thinker_eager_towers).train()
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=2, seed=1))
    compiled = torch.compile(model, backend=SeatsBackend(dict(OPTIONS, retention=0.1)), dynamic=True)
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        for _ in range(2):
            compiled(**inputs).logits.float().pow(2).mean().backward()
    plain(**inputs).logits.float().pow(2).mean().backward()
    plain(**inputs).logits.float().pow(2).mean().backward()
    assert not last_stats().pruned and "gradients enabled" in last_stats().skipped
    lines = [line for line in _seats_lines(caplog) if "gradients enabled" in line]
    assert len(lines) == 1, _seats_lines(caplog)
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


# ---- several models, many calls ---------------------------------------------------------------------
@pytest.mark.slow
def test_two_models_with_different_options_interleaved_do_not_cross(thinker_eager_towers):
    inputs = [synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=s, seed=s)) for s in (2, 4)]
    first, second = dict(OPTIONS, retention=0.1), dict(GRAPH_OPTIONS[1], retention=0.3, inductor=False)
    models = [(towers_run_eagerly(fresh_copy(thinker_eager_towers)), options) for options in (first, second)]
    compiled = [(torch.compile(m, backend=SeatsBackend(o), dynamic=True), o) for m, o in models]
    for clip in inputs + inputs:
        for model, options in compiled:
            with torch.no_grad():
                model(**clip)
            reference = seats_forward(thinker_eager_towers, clip, options)
            positions = last_stats().stage_positions
            assert len(positions) == len(reference.stages)
            assert all(torch.equal(a, b.kept_positions) for a, b in zip(positions, reference.stages))
    assert SeatsBackend(first).manager.uuid() != SeatsBackend(second).manager.uuid()


@pytest.mark.slow
def test_inductor_cache_key_changes_with_the_options(thinker_eager_towers, tmp_path, monkeypatch):
    # with Inductor's FX-graph cache on (fresh directory): the same graph options compiled again by a new
    # backend, with another retention, hit the cache (retention is read at run time: the pieces are the same
    # code, and nothing that does not change a piece may force a miss); options that change the graph miss it
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    # config.patch, not monkeypatch.setattr: undoing a setattr on Inductor's config module deletes the entry
    # for the rest of the process ("torch._inductor.config.fx_graph_cache does not exist")
    inputs = synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=2, seed=1))

    def compile_and_count(options) -> tuple[int, int]:
        torch._dynamo.reset()
        counters.clear()
        with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=True):
            torch.compile(thinker_eager_towers, backend=SeatsBackend(options), dynamic=False)(**inputs)
        reference = seats_forward(thinker_eager_towers, inputs, options)
        assert torch.equal(last_stats().kept_positions, reference.kept_positions)
        return counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]

    first = dict(GRAPH_OPTIONS[0], retention=0.1)
    _, misses = compile_and_count(first)
    assert misses > 0
    hits, new_misses = compile_and_count(dict(first, retention=0.3))
    assert hits >= misses and new_misses == 0  # every piece (and every other graph) served from the cache
    _, graph_misses = compile_and_count(dict(GRAPH_OPTIONS[1], retention=0.3))
    assert graph_misses > 0  # other boundaries: other pieces, and a new key


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc")
def test_fifty_calls_with_changing_lengths_recompile_boundedly_and_do_not_grow(thinker_eager_towers):
    clips = [synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=s, seed=s)) for s in (2, 4, 6)]
    backend = SeatsBackend(dict(OPTIONS, retention=0.2))
    compiled = torch.compile(towers_run_eagerly(fresh_copy(thinker_eager_towers)), backend=backend, dynamic=True)
    rss = []
    with torch.no_grad():
        for call in range(50):
            compiled(**clips[call % 3])
            assert last_stats().pruned
            if call in (9, 49):
                gc.collect()
                rss.append(_rss_mib())
    assert backend.decoder_compiles <= 2
    assert rss[1] - rss[0] < 20, f"RSS grew from {rss[0]:.0f} to {rss[1]:.0f} MiB over 40 calls"


# ---- the whole pipeline, fuzzed ---------------------------------------------------------------------
def _tiny_model(layers: int, heads: int, width: int):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config

    torch.manual_seed(layers * 100 + heads * 10 + width)
    spec = TinySpec(num_layers=layers, num_heads=heads, num_kv_heads=heads // 2, hidden_size=width,
                    intermediate_size=2 * width)
    # the towers run eagerly (eager_towers.towers_run_eagerly): a compile traces the decoder only, and the clip
    # structures the fuzz draws cost no retrace of the towers' loops
    return towers_run_eagerly(Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(spec)).eval())


# these decoders are 2-6 layers deep: the paper's stage-1 ratio (1.4 R) cannot average R over them once the late
# block drops every media token, so most option sets raise it; the plain retention=0.1 case checks the refusal
FUZZ_OPTIONS = [
    dict(retention=0.1, encoder_ratio_scale=3.0), dict(retention=0.3, stage3=False),
    dict(video_retention=0.05, audio_retention=0.5, encoder_ratio_scale=3.0), dict(retention=0.2, stage1=False),
    dict(retention=0.2, stage2=False, encoder_ratio_scale=3.0), dict(retention=1.0, stage3=False),
    dict(retention=0.1),
]
fuzz_options = st.sampled_from(FUZZ_OPTIONS)
_fuzz_models: dict = {}


def _fuzz_compiled(shape, options):
    """The shape's model and its compiled forward with `options`: one trace per shape serves every option
    set (option_switch.switch_for), so a shard's cost is two traces, not fourteen."""
    if shape not in _fuzz_models:
        _fuzz_models[shape] = _tiny_model(*shape)
    model = _fuzz_models[shape]
    return model, switch_for(model, FUZZ_OPTIONS).for_options(options)


def check_pipeline(shape, options, clip):
    options = dict(options, inductor=False)
    model, compiled = _fuzz_compiled(shape, options)
    inputs = synthetic_clip_inputs(model.config, clip)
    adapter = adapter_for(model)
    try:
        StagePlan.resolve(SeatsConfig.from_options(options), adapter.depth, adapter.drop_layer_fractions,
                          adapter.late_block_fraction)
    except ValueError as refusal:  # an unreachable target on this depth: the compiled model refuses it too
        with pytest.raises(Exception) as raised, torch.no_grad():
            compiled(**inputs)
        assert str(_value_error_in(raised.value)) == str(refusal)
        return
    set_last_stats(None)  # the stats read below are this call's
    with torch.no_grad():
        logits = compiled(**inputs).logits
        plain = model(**inputs).logits if options.get("retention") == 1.0 else None
    stats = last_stats()
    reference = seats_forward(model, inputs, options)
    if plain is not None:  # keep-everything: the graphs are left untouched, the logits are the model's own
        assert not stats.pruned
        torch.testing.assert_close(logits, plain, atol=1e-4, rtol=0)
        return
    assert stats.pruned, stats.skipped
    assert len(stats.stage_positions) == len(reference.stages), (stats.stages, [r.stage for r in reference.stages])
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), expected.stage
    kept = reference.kept_positions[0]
    torch.testing.assert_close(logits[:, kept], reference.logits, atol=1e-4, rtol=0)
    text = torch.nonzero(adapter_for(model).encode(inputs, 2.0).layout.modality[0] == 0).flatten()
    assert set(text.tolist()) <= set(kept.tolist()), "a text token was dropped"


# (layers, heads, width): each distinct shape x option set is one Dynamo compile, the fuzz's main cost, so
# the width follows the head count (2 heads: 32, 4 heads: 64) rather than doubling the shapes, and each shard
# draws two of the three depths
def model_shapes(heads: int):
    return st.tuples(st.sampled_from(SHARD_DEPTHS[heads]), st.just(heads), st.just(16 * heads))


def fuzz_clips(audio_seconds: list):
    return st.builds(ClipSpec, video_seconds=st.integers(1, 8), audio_seconds=st.sampled_from(audio_seconds),
                     height=st.sampled_from([56, 112]), width=st.sampled_from([56, 84, 112]),
                     system_tokens=st.integers(1, 16), question_tokens=st.integers(1, 12),
                     seed=st.integers(0, 10_000))


# 200 cases in two shards of 100: 2-head models 2 or 4 layers deep on clips with an audio track (as long as
# the video, or shorter), 4-head models 4 or 6 layers deep on video without audio. With or without audio is
# another decoder graph, so each (model, options) pair a shard draws compiles one decoder graph instead of two,
# and 14 such pairs instead of 21 (compiles are its main cost)
SHARD_AUDIO = {2: [None, 0.5, 3.0], 4: [0]}
SHARD_DEPTHS = {2: [2, 4], 4: [4, 6]}


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.parametrize("heads", [2, 4])
@settings(max_examples=100)
@given(data=st.data(), options=fuzz_options)
def test_pipeline_fuzz(heads, data, options):
    shape = data.draw(model_shapes(heads), label="shape")
    check_pipeline(shape, options, data.draw(fuzz_clips(SHARD_AUDIO[heads]), label="clip"))
