"""Fast encoder towers (seats_fx.use_fast_encoders): one attention call per encoder layer, the per-segment
path's outputs and SEATS selections, and stage 1's q/k recorded by the attention op itself."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import seats_fx
from seats_fx import last_stats, use_fast_encoders
from seats_fx import runtime
from seats_fx.call import _received
from seats_fx.config import SeatsConfig
from seats_fx.encoder_attention import (ATTENTION_NAME, TAP_ATTRIBUTE, encoder_attention_forward, encoder_towers,
                                        padded_segment_attention, tower_attention_modules)
from seats_fx.models import adapter_for
from seats_fx.models.configs import token_ids_for_vocab
from seats_fx.models.synthetic import (ClipSpec, batch_inputs, synthetic_audio_inputs, synthetic_clip_inputs,
                                       synthetic_image_inputs)
from seats_fx.reference import seats_forward

from generate_helpers import fresh_copy

OPTIONS = dict(retention=0.3, progressive_drop_layers=(3, 5), late_block_layer=7)


# ---- helpers -----------------------------------------------------------------------------------------------
def frame_side(model) -> int:
    vision = model.config.vision_config
    return 4 * vision.patch_size * vision.spatial_merge_size  # 112 (Qwen2.5-Omni) / 128 (Qwen3-Omni)


def prompt(model, kind: str, seed: int = 0) -> dict:
    """One sample of each prompt kind the towers see: video alone, image, audio alone, audio in video."""
    side = frame_side(model)
    if kind == "video":
        return synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4 + 2 * seed, audio_seconds=0, height=side,
                                                            width=side, seed=seed))
    if kind == "image":
        return synthetic_image_inputs(model.config, side, side + side * seed, seed=seed)
    if kind == "audio-only":
        return synthetic_audio_inputs(model.config, seconds=2.7 + 1.6 * seed, seed=seed)
    return synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4 + 2 * seed, audio_seconds=3.3 + seed,
                                                        height=side, width=side, seed=seed))


def prompts(model, kind: str, batch: int) -> dict:
    samples = [prompt(model, kind, seed) for seed in range(batch)]
    if batch == 1:
        return samples[0]
    return batch_inputs(samples, token_ids_for_vocab(model.config.text_config.vocab_size)["pad"])


_fast_copies: dict = {}


def fast_copy(model, stage1_taps: bool = False):
    """A copy of `model` (same weights) whose towers use the fast encoders; the session fixture stays as it is."""
    key = (id(model), stage1_taps)
    if key not in _fast_copies:
        _fast_copies[key] = use_fast_encoders(fresh_copy(model), stage1_taps=stage1_taps)
    return _fast_copies[key]


@pytest.fixture(params=["tiny_thinker", "tiny_qwen3"])
def thinker(request):
    return request.getfixturevalue(request.param)


class TowerAttentionCalls(TorchDispatchMode):
    """Counts attention kernels (any op whose name says "attention": SDPA's kernels, varlen, ours) in each
    call of a model's encoder towers. A dispatch mode sees an op once, not the ops its kernel runs inside."""

    def __init__(self, model) -> None:
        super().__init__()
        self.calls: list[list] = []  # [tower kind, attention calls] per tower call, in order
        self._open = False
        self._handles = []
        for kind, tower in encoder_towers(model).items():
            self._handles.append(tower.register_forward_pre_hook(lambda *_, kind=kind: self._begin(kind)))
            self._handles.append(tower.register_forward_hook(lambda *_: self._end()))

    def _begin(self, kind: str) -> None:
        self.calls.append([kind, 0])
        self._open = True

    def _end(self) -> None:
        self._open = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self._open and "attention" in str(func):
            self.calls[-1][1] += 1
        return func(*args, **(kwargs or {}))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@contextmanager
def counting(model):
    mode = TowerAttentionCalls(model)
    try:
        with torch.no_grad(), mode:
            yield mode
    finally:
        mode.remove()


def tower_depths(model) -> dict[str, int]:
    return {kind: len(tower_attention_modules(tower, kind)) for kind, tower in encoder_towers(model).items()}


def per_segment_attention(query, key, value, cu_seqlens, scale):
    """The towers' per-chunk path: one SDPA call per segment of packed (N, H, hd) inputs."""
    bounds = cu_seqlens.tolist()
    outs = [torch.nn.functional.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (query, key, value)),
                                                             scale=scale).transpose(0, 1)
            for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat(outs)


def encoder_outputs(model, inputs: dict) -> dict[str, torch.Tensor]:
    """Returns what the towers give the LLM for these inputs (video/image features, audio features)."""
    adapter = adapter_for(model)
    base, out = adapter.multimodal, {}
    with torch.no_grad():
        for key, grid, getter in (("pixel_values_videos", "video_grid_thw", base.get_video_features),
                                  ("pixel_values", "image_grid_thw", base.get_image_features)):
            if key in inputs:
                out[key] = torch.cat(list(getter(inputs[key], inputs[grid], return_dict=True).pooler_output))
        if "input_features" in inputs:
            features = inputs["input_features"].to(next(model.parameters()).dtype)
            out["audio"] = base.get_audio_features(features, inputs["feature_attention_mask"],
                                                   return_dict=True).last_hidden_state
    return out


def assert_same_selections(expected, got) -> None:
    assert [(s.stage, s.after_layer) for s in got.stages] == [(s.stage, s.after_layer) for s in expected.stages]
    for mine, theirs in zip(got.stages, expected.stages):
        assert torch.equal(mine.kept_positions, theirs.kept_positions), f"{theirs.stage} after {theirs.after_layer}"


# ---- the op ------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 19), min_size=1, max_size=6).filter(any), heads=st.integers(1, 3),
       head_dim=st.sampled_from([8, 16]), seed=st.integers(0, 2**16))
def test_padded_segment_attention_is_each_segments_own_attention(lengths, heads, head_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    q, k, v = (torch.randn(int(cu[-1]), heads, head_dim, generator=gen) for _ in range(3))
    got = padded_segment_attention(q, k, v, cu, max(lengths), head_dim ** -0.5)
    torch.testing.assert_close(got, per_segment_attention(q, k, v, cu, head_dim ** -0.5), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("takes_scale", [True, False])
def test_varlen_route_hands_the_kernel_int32_segments_and_the_towers_scale(monkeypatch, takes_scale):
    """No GPU here: the flash kernel is stood in for by per-segment SDPA at its own default scale unless
    told one, as torch's varlen_attn does (torch 2.10's has no scale argument: the query is pre-scaled)."""
    from seats_fx import encoder_attention

    seen = {}

    def varlen_attn(query, key, value, cu_q, cu_k, max_q, max_k, **kwargs):
        seen.update(dtype=cu_q.dtype, same=cu_q is cu_k, max=(max_q, max_k), contiguous=value.is_contiguous())
        return per_segment_attention(query, key, value, cu_q, kwargs.get("scale", query.shape[-1] ** -0.5))

    monkeypatch.setattr(encoder_attention, "_uses_varlen", lambda query: True)
    monkeypatch.setattr(encoder_attention, "_varlen_attn", lambda: varlen_attn)
    monkeypatch.setattr(encoder_attention, "_varlen_takes_scale", lambda: takes_scale)
    cu = torch.tensor([0, 3, 10, 11], dtype=torch.long)
    q, k = torch.randn(11, 2, 8), torch.randn(11, 2, 8)
    v = torch.randn(11, 3, 2, 8)[:, 1]  # a strided slice, as Qwen3-Omni's v of one qkv projection
    got = encoder_attention.segment_attention(q, k, v, cu, 7, 0.3)
    assert seen == {"dtype": torch.int32, "same": True, "max": (7, 7), "contiguous": True}
    torch.testing.assert_close(got, per_segment_attention(q, k, v, cu, 0.3), atol=1e-6, rtol=1e-5)


def test_op_schema_and_fake_kernel_pass_opcheck():
    q, k, v = (torch.randn(1, 2, 13, 8) for _ in range(3))
    cu = torch.tensor([0, 5, 13], dtype=torch.int32)
    torch.library.opcheck(torch.ops.seats_fx.encoder_attention.default, (q, k, v, cu, 8, 0.3, ""))


def test_gradients_flow_through_the_differentiable_path():
    q, k, v = (torch.randn(1, 2, 9, 8, requires_grad=True) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)

    class Tower(torch.nn.Module):
        pass

    out, _ = encoder_attention_forward(Tower(), q, k, v, None, scaling=0.25, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                                       max_length_q=5, max_length_k=5)
    out.square().sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    packed = [t[0].transpose(0, 1) for t in (q, k, v)]
    per_segment_attention(*packed, cu, 0.25).square().sum().backward()
    for mine, expected in zip(got, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(mine, expected, atol=1e-6, rtol=1e-5)


def test_a_call_without_segments_is_refused_naming_the_towers():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="towers"):
        encoder_attention_forward(torch.nn.Linear(1, 1), q, q, q, None)


# ---- turning it on ---------------------------------------------------------------------------------------------
def test_only_the_towers_switch_and_other_models_sharing_the_config_do_not(tiny_thinker):
    model = use_fast_encoders(fresh_copy(tiny_thinker), stage1_taps=True)  # built from the fixture's config
    for kind, tower in encoder_towers(model).items():
        assert all(m.config._attn_implementation == ATTENTION_NAME for m in tower_attention_modules(tower, kind))
        assert [getattr(m, TAP_ATTRIBUTE, "") for m in tower_attention_modules(tower, kind)][-2:] == ["", kind]
    towers = encoder_towers(model)
    # the vision run-start hook (taps only) and the audio chunking hook, once each however often it is called
    use_fast_encoders(model, stage1_taps=True)
    assert len(towers["vision"]._forward_pre_hooks) == len(towers["audio"]._forward_pre_hooks) == 1
    assert len(encoder_towers(use_fast_encoders(fresh_copy(tiny_thinker)))["vision"]._forward_pre_hooks) == 0
    assert adapter_for(model).language_model.config._attn_implementation == "sdpa"
    for tower in encoder_towers(tiny_thinker).values():
        assert tower.config._attn_implementation == "sdpa"
    use_fast_encoders(model, enabled=False)
    for kind, tower in encoder_towers(model).items():
        assert tower.config._attn_implementation == "sdpa"
        assert not any(hasattr(m, TAP_ATTRIBUTE) for m in tower_attention_modules(tower, kind))
        assert not tower._forward_pre_hooks


def test_use_fast_encoders_refuses_a_model_without_towers():
    with pytest.raises(ValueError, match="vision and/or audio tower"):
        use_fast_encoders(torch.nn.Linear(2, 2))


def test_seats_compile_turns_fast_encoders_on_unless_told_not_to(tiny_thinker):
    assert SeatsConfig().fast_encoders is True
    with pytest.raises(ValueError, match="fast_encoders"):
        SeatsConfig(fast_encoders="yes")
    on = seats_fx.compile(fresh_copy(tiny_thinker), {"inductor": False})  # compiling is lazy: nothing traced yet
    off = seats_fx.compile(fresh_copy(tiny_thinker), {"inductor": False, "fast_encoders": False})
    for kind, tower in encoder_towers(on).items():
        assert tower.config._attn_implementation == ATTENTION_NAME
        assert getattr(tower_attention_modules(tower, kind)[-1], TAP_ATTRIBUTE) == kind
    assert all(t.config._attn_implementation == "sdpa" for t in encoder_towers(off).values())


# ---- one attention call per encoder layer ------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind", ["video", "image", "audio-only", "audio-in-video"])
def test_one_attention_call_per_encoder_layer(thinker, kind, batch):
    model = fast_copy(thinker)
    inputs = prompts(model, kind, batch)
    with counting(model) as calls:
        model(**inputs)
    towers = {"video": ["vision"], "image": ["vision"], "audio-only": ["audio"],
              "audio-in-video": ["audio", "vision"]}[kind]
    assert sorted(k for k, _ in calls.calls) == towers  # each tower runs once for the whole batch
    depths = tower_depths(model)
    assert calls.calls == [[k, depths[k]] for k, _ in calls.calls]


def test_the_per_chunk_path_makes_one_call_per_segment(tiny_thinker):
    """The counter sees the per-chunk calls the fast path removes (so the count above can fail)."""
    inputs = prompt(tiny_thinker, "audio-in-video")
    with counting(tiny_thinker) as calls:
        tiny_thinker(**inputs)
    depths = tower_depths(tiny_thinker)
    assert all(count > depths[kind] for kind, count in calls.calls)


# ---- same outputs, same selections ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["audio-in-video", "image"])
def test_encoder_outputs_equal_the_per_chunk_path_in_fp32(thinker, kind):
    inputs = prompts(thinker, kind, 2)  # ragged: two clips of different lengths, audio chunks of several sizes
    expected, got = encoder_outputs(thinker, inputs), encoder_outputs(fast_copy(thinker), inputs)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_encoder_outputs_equal_the_per_chunk_path_in_bf16(thinker):
    inputs = prompts(thinker, "audio-in-video", 2)
    plain = fresh_copy(thinker).to(torch.bfloat16)
    fast = use_fast_encoders(fresh_copy(thinker)).to(torch.bfloat16)
    expected, got = encoder_outputs(plain, inputs), encoder_outputs(fast, inputs)
    for name in expected:
        scale = float(expected[name].abs().max())
        # two bf16 roundings of the same math: within a few bf16 ulps of the magnitude
        torch.testing.assert_close(got[name].float(), expected[name].float(), atol=2 ** -6 * scale, rtol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind", ["audio-in-video", pytest.param("image", marks=pytest.mark.slow),
                                  pytest.param("audio-only", marks=pytest.mark.slow)])
def test_kept_indices_match_the_per_chunk_path(thinker, kind):
    inputs = prompt(thinker, kind)
    assert_same_selections(seats_forward(thinker, inputs, OPTIONS), seats_forward(fast_copy(thinker), inputs, OPTIONS))


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(family=st.sampled_from(["tiny_thinker", "tiny_qwen3"]), kind=st.sampled_from(["video", "image", "audio-in-video"]),
       video_seconds=st.sampled_from([2, 4, 6, 8]), audio_seconds=st.floats(0.7, 9.0), seed=st.integers(0, 999),
       retention=st.sampled_from([0.1, 0.2, 0.4]))
def test_kept_indices_match_the_per_chunk_path_wide(tiny_thinker, tiny_qwen3, family, kind, video_seconds,
                                                    audio_seconds, seed, retention):
    model = tiny_thinker if family == "tiny_thinker" else tiny_qwen3
    side = frame_side(model)
    if kind == "image":
        inputs = synthetic_image_inputs(model.config, side, side * (1 + seed % 3), seed=seed)
    else:
        audio = 0 if kind == "video" else round(audio_seconds, 1)
        inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=video_seconds, audio_seconds=audio,
                                                              height=side, width=side * (1 + seed % 2), seed=seed))
    options = dict(OPTIONS, retention=retention)
    assert_same_selections(seats_forward(model, inputs, options), seats_forward(fast_copy(model), inputs, options))


# ---- stage 1: the op records the last layer's q/k -------------------------------------------------------------------
def test_recorded_last_layer_gives_the_references_stage1_weights(thinker):
    """An eager forward (the towers outside any compiled graph, as generate() runs the vision tower) records
    what stage 1 needs: the weights call.py derives from the taps equal the reference's, token for token."""
    model = fast_copy(thinker, stage1_taps=True)
    inputs = prompt(model, "audio-in-video")
    adapter = adapter_for(model)
    expected = adapter.encode(inputs, 2.0).token_weights[0]
    runtime.take_encoder_taps()
    with torch.no_grad():
        model(**inputs)
    taps = runtime.take_encoder_taps()
    ids = inputs["input_ids"][0]
    video = ids == model.config.video_token_id
    audio = ids == model.config.audio_token_id
    (run,) = taps.vision_runs
    vision = adapter.vision_token_weights(_received(run.chunks, run.scale), run.window_index)
    torch.testing.assert_close(vision, expected[video], atol=1e-6, rtol=1e-5)
    frames = _received(taps.audio_chunks, taps.audio_scale)
    mel_lengths = inputs["feature_attention_mask"].sum(-1)
    torch.testing.assert_close(adapter.audio_token_weights(frames, mel_lengths), expected[audio], atol=1e-6, rtol=1e-5)


def test_untapped_fast_encoders_record_nothing(tiny_thinker):
    model = fast_copy(tiny_thinker)
    runtime.take_encoder_taps()
    with torch.no_grad():
        model(**prompt(model, "audio-in-video"))
    taps = runtime.take_encoder_taps()
    assert taps.audio_chunks is None and taps.vision_runs == []


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_thinker", "tiny_qwen3"])
def test_compiled_path_with_fast_encoders_prunes_and_matches_reference(request, family):
    model = request.getfixturevalue(family)
    options = dict(OPTIONS, inductor=False)
    compiled = seats_fx.compile(fresh_copy(model), options)
    for kind in ("audio-in-video", "image"):
        inputs = prompt(model, kind)
        with torch.no_grad():
            logits = compiled(**inputs).logits
        stats, reference = last_stats(), seats_forward(model, inputs, options)
        assert stats.pruned, stats.skipped
        assert all(signal == "encoder attention" for signal in stats.stage1_signal.values()), stats.stage1_signal
        for got, expected in zip(stats.stage_positions, reference.stages):
            assert torch.equal(got, expected.kept_positions), f"{kind}: {expected.stage} after {expected.after_layer}"
        kept = reference.kept_positions[0]
        torch.testing.assert_close(logits[:, kept], reference.logits, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_bare_compile_with_tapped_fast_encoders_prunes_generate_with_vision_weights(tiny_thinker):
    """generate() encodes the video eagerly, outside the compiled forward: the op still records its last
    layer and the tower's run (with Qwen2.5-Omni's window permutation), so stage 1 weights video tokens."""
    from seats_fx.reference import seats_generate

    model = use_fast_encoders(fresh_copy(tiny_thinker), stage1_taps=True)
    options = dict(OPTIONS, inductor=False)
    model.compile(backend="seats", options=options, dynamic=True)
    inputs = prompt(tiny_thinker, "audio-in-video")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    stats = last_stats()
    assert stats.pruned, stats.skipped
    assert stats.stage1_signal == {"audio": "encoder attention", "video": "encoder attention"}
    reference = seats_generate(tiny_thinker, inputs, options, max_new_tokens=2).prefill
    for got, expected in zip(stats.stage_positions, reference.stages):
        assert torch.equal(got, expected.kept_positions), f"{expected.stage} after {expected.after_layer}"


@pytest.mark.slow
def test_recorded_qk_survive_inductor_buffer_reuse(tiny_thinker):
    """Inductor reuses the buffers of an op's inputs for later kernels of the same graph; the tapped layer's
    q/k must still hold that layer's values when stage 1 reads them after the graph."""
    model = fast_copy(tiny_thinker, stage1_taps=True)
    inputs = prompt(model, "audio-in-video")
    base = adapter_for(model).multimodal
    features, mask = inputs["input_features"], inputs["feature_attention_mask"]
    runtime.take_encoder_taps()
    with torch.no_grad():
        base.get_audio_features(features, mask)
    eager = runtime.take_encoder_taps()
    with torch.no_grad():
        torch.compile(base.get_audio_features, dynamic=True)(features, mask)
    compiled = runtime.take_encoder_taps()
    assert len(compiled.audio_chunks) == len(eager.audio_chunks)
    for (q, k), (q_eager, k_eager) in zip(compiled.audio_chunks, eager.audio_chunks):
        torch.testing.assert_close(q, q_eager, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(k, k_eager, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_new_clip_length_costs_fewer_dynamo_graphs(tiny_thinker):
    """Measured with Dynamo's own eager backend (graph counts do not depend on the lowering). On the
    Qwen2.5-Omni towers only: each length retraces both towers' loops (about a minute a family), and Qwen3-Omni's
    fast towers are the same op (its compiled path: test_compiled_path_with_fast_encoders_prunes_...)."""
    from torch._dynamo.utils import counters

    model = tiny_thinker
    side = frame_side(model)
    new_graphs = {}
    for name, candidate in (("per-chunk", fresh_copy(model)), ("fast", use_fast_encoders(fresh_copy(model)))):
        adapter_for(candidate).prepare_for_compile()
        compiled = torch.compile(candidate, backend="eager", dynamic=True)
        for seconds in (4, 6, 8):  # the third length shows the steady state (measured: 1 graph fast, 4 before)
            before = counters["stats"]["unique_graphs"]
            with torch.no_grad():
                compiled(**synthetic_clip_inputs(candidate.config, ClipSpec(video_seconds=seconds, height=side,
                                                                            width=side, seed=seconds)))
            new_graphs[name] = counters["stats"]["unique_graphs"] - before  # the last length's
    assert new_graphs["fast"] < new_graphs["per-chunk"], new_graphs
