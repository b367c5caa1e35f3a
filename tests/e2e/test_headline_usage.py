"""The design card's usage, literally: torch.compile(model, backend="seats", options=...) with no seats_fx
import in the model code, against the eager reference; and what it must never do silently."""

import logging

import pytest
import torch

from seats_fx import last_stats
from seats_fx.models.synthetic import ClipSpec, synthetic_audio_inputs, synthetic_clip_inputs
from seats_fx.reference import seats_forward

OPTIONS = dict(progressive_drop_layers=(3, 5), late_block_layer=7, retention=0.2)


def seats_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "seats_fx" and r.levelno >= logging.WARNING]


def compile_and_run(model, inputs, options, dynamic=None):
    torch._dynamo.reset()
    with torch.no_grad():
        return torch.compile(model, backend="seats", options=options, dynamic=dynamic)(**inputs).logits


def assert_pruned_like_the_reference(model, inputs, options, logits, atol=1e-4):
    stats = last_stats()
    reference = seats_forward(model, inputs, options)
    assert stats is not None and stats.pruned, stats and stats.skipped
    assert len(stats.stage_positions) == len(reference.stages)
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after layer {expected.after_layer}"
    kept = reference.kept_positions[0]
    torch.testing.assert_close(logits[:, kept], reference.logits, atol=atol, rtol=0)
    return stats


@pytest.mark.parametrize("clip", [ClipSpec(video_seconds=4, seed=1), ClipSpec(video_seconds=4, audio_seconds=0, seed=2)],
                         ids=["with-audio", "video-only"])
def test_bare_torch_compile_prunes_a_clip_like_the_reference_and_warns_nothing(tiny_thinker, clip, caplog):
    inputs = synthetic_clip_inputs(tiny_thinker.config, clip)
    options = dict(OPTIONS, inductor=False)
    with caplog.at_level(logging.INFO, logger="seats_fx"):
        logits = compile_and_run(tiny_thinker, inputs, options)
    stats = assert_pruned_like_the_reference(tiny_thinker, inputs, options, logits)
    assert stats.stage1_signal == ({"video": "encoder attention", "audio": "encoder attention"}
                                   if clip.audio_seconds != 0 else {"video": "encoder attention"})
    assert seats_warnings(caplog) == []


@pytest.mark.slow
def test_bare_torch_compile_with_inductor_prunes_like_the_reference(tiny_thinker, caplog):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=3))
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        logits = compile_and_run(tiny_thinker, inputs, OPTIONS)
    assert_pruned_like_the_reference(tiny_thinker, inputs, OPTIONS, logits)
    assert seats_warnings(caplog) == []


def test_audio_only_prompt_is_pruned_without_warnings(tiny_thinker, caplog):
    inputs = synthetic_audio_inputs(tiny_thinker.config, 6.0)
    options = dict(OPTIONS, inductor=False)
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        logits = compile_and_run(tiny_thinker, inputs, options)
    assert_pruned_like_the_reference(tiny_thinker, inputs, options, logits)
    assert seats_warnings(caplog) == []


def test_retention_one_is_the_unpruned_model_exactly(thinker_eager_towers):
    tiny_thinker = thinker_eager_towers  # no stage runs: the towers need not be in the graph
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=4))
    logits = compile_and_run(tiny_thinker, inputs, {"retention": 1.0, "inductor": False})
    stats = last_stats()
    assert not stats.pruned and "every token is kept" in stats.skipped
    with torch.no_grad():
        expected = tiny_thinker(**inputs).logits
    assert torch.equal(logits, expected)


def _strip_module_stacks(backend):
    """A backend that hands `backend` graphs whose nodes lost their nn_module_stack: what a torch release
    that records no module metadata would give. Every structural rule then finds no decoder."""
    def stripped(gm, example_inputs):
        for node in gm.graph.nodes:
            node.meta.pop("nn_module_stack", None)
        return backend(gm, example_inputs)
    return stripped


def test_missing_graph_metadata_is_never_a_silent_no_op(thinker_eager_towers, caplog):
    from seats_fx import SeatsBackend

    tiny_thinker = thinker_eager_towers  # the decoder's metadata is what matters; the towers run eagerly

    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=2, seed=5))
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="seats_fx"), torch.no_grad():
        compiled = torch.compile(tiny_thinker, backend=_strip_module_stacks(SeatsBackend({"inductor": False})))
        logits = compiled(**inputs).logits
        compiled(**inputs)
        expected = tiny_thinker(**inputs).logits
    lines = seats_warnings(caplog)
    assert len(lines) == 1 and "left unpruned" in lines[0] and "torch " in lines[0] and "transformers " in lines[0], lines
    assert not last_stats().pruned
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="strict"), torch.no_grad():
        torch.compile(tiny_thinker, backend=_strip_module_stacks(SeatsBackend({"inductor": False, "strict": True})))(
            **inputs)
    torch._dynamo.reset()


def test_model_compile_then_generate_prunes_with_the_signal_it_has_like_the_reference(tiny_thinker, caplog):
    from generate_helpers import assert_step_logits_match, fresh_copy, generate_with_logits

    from seats_fx.reference import seats_generate

    model = fresh_copy(tiny_thinker)
    options = dict(OPTIONS, inductor=False)
    model.compile(backend="seats", options=options)
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=6))
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        generated, _, logits = generate_with_logits(model, inputs, 6)
    stats = last_stats()
    assert stats.pruned and stats.stages and stats.layer_counts[-1]["video"] == 0
    # transformers 5.17 encodes media inside the compiled forward; later 5.x encode images and videos before
    # the prefill (mm_encoder_outputs), and stage 1 then has no vision attention to weight video tokens by
    eager_video = stats.stage1_signal["video"].startswith("uniform")
    assert stats.stage1_signal["audio"] == "encoder attention"
    lines = seats_warnings(caplog)
    assert len(lines) == int(eager_video) and all("seats_fx.compile" in line for line in lines), lines
    reference = seats_generate(tiny_thinker, inputs, options, max_new_tokens=6,
                               unweighted=("video",) if eager_video else ())
    assert torch.equal(stats.kept_positions, reference.prefill.kept_positions)
    assert generated.tolist() == reference.tokens.tolist()
    assert_step_logits_match(logits, reference.logits, 1e-4)
    with torch.no_grad():
        keep_all = tiny_thinker(**inputs).logits[:, -1]
    assert not torch.allclose(logits[0], keep_all, atol=1e-4)  # the first step's scores saw the pruned prompt


def test_per_segment_encoder_attention_runs_as_captured_and_the_other_graphs_are_lowered(tiny_thinker, monkeypatch):
    """transformers' sdpa towers call attention once per window / chunk; Inductor copies each call's q/k/v
    (towers 2x slower than eager on an H200), so those graphs run as captured. Every other graph outside the
    decoder is still lowered, and stage 1 still gets the encoder attention from them."""
    import importlib

    from seats_fx.passes import dynamo_meta, partition

    backend = importlib.import_module("seats_fx.backend")  # the module (seats_fx.backend is also a function)

    per_segment, lowered = [], []
    check = backend._attends_per_segment

    def spy(encoder_taps):
        per_segment.append(check(encoder_taps))
        return per_segment[-1]

    def recording_inductor(gm, example_inputs):  # what the backend hands Inductor, run as captured here
        lowered.append(check(backend.locate_encoder_taps(gm, dynamo_meta.frame_module())))
        return gm.forward

    monkeypatch.setattr(backend, "_attends_per_segment", spy)
    monkeypatch.setattr(backend, "_inductor", recording_inductor)
    piece_init = partition.PieceProgram.__init__  # decoder pieces run as captured: not what is tested here
    monkeypatch.setattr(partition.PieceProgram, "__init__",
                        lambda self, module, use_inductor, key, *more: piece_init(self, module, False, key, *more))
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=1))
    options = dict(OPTIONS, inductor=True)
    logits = compile_and_run(tiny_thinker, inputs, options)
    stats = assert_pruned_like_the_reference(tiny_thinker, inputs, options, logits)
    assert stats.stage1_signal == {"video": "encoder attention", "audio": "encoder attention"}
    assert any(per_segment), "the tiny towers should attend per segment (else this test checks nothing)"
    assert lowered and not any(lowered)


def attention_calls(run) -> dict[str, int]:
    """Counts attention calls of one run() with torch.profiler (a dispatch mode would make Dynamo run the
    frames uncompiled): SDPA calls and seats_fx.encoder_attention calls, not the SDPA inside the latter."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    counts = {"sdpa": 0, "encoder_attention": 0}
    for event in prof.events():
        parents, parent = [], event.cpu_parent
        while parent is not None:
            parents.append(parent.name)
            parent = parent.cpu_parent
        if event.name == "seats_fx::encoder_attention":
            counts["encoder_attention"] += 1
        elif event.name == "aten::scaled_dot_product_attention" and not any(
                name in ("seats_fx::encoder_attention", "aten::scaled_dot_product_attention") for name in parents):
            counts["sdpa"] += 1
    return counts


def test_bare_torch_compile_makes_one_attention_call_per_encoder_layer(tiny_thinker):
    """transformers' sdpa towers call SDPA once per window / frame / chunk; under the backend each encoder
    layer makes one encoder_attention call instead, and the decoder keeps its one SDPA per layer."""
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, seed=1))
    options = dict(OPTIONS, inductor=False)
    torch._dynamo.reset()
    compiled = torch.compile(tiny_thinker, backend="seats", options=options)
    with torch.no_grad():
        compiled(**inputs)
        outputs = []
        counted = attention_calls(lambda: outputs.append(compiled(**inputs).logits))
    assert_pruned_like_the_reference(tiny_thinker, inputs, options, outputs[0])
    encoder_layers = tiny_thinker.config.vision_config.depth + tiny_thinker.config.audio_config.encoder_layers
    decoder_layers = tiny_thinker.config.text_config.num_hidden_layers
    assert counted == {"encoder_attention": encoder_layers, "sdpa": decoder_layers}
