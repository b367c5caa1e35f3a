"""Qwen3-Omni's TMRoPE positions without the per-token interleave (seats_fx.qwen3_rope_index) against transformers'
own get_rope_index: equal positions and deltas on prompts of every kind (clips with audio in video, video alone,
images, padded batches, fractional seconds per grid), the merge against a plain merge loop, fewer host reads that
do not grow with the clip, and outside Dynamo."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import seats_fx
from seats_fx.models import adapter_for
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.qwen3_rope_index import fast_get_rope_index, merge_order, use_fast_qwen3_rope_index

from eager_towers import fresh_copy
from scalar_reads import ScalarReads


def _holder(model):
    """The module whose get_rope_index the thinker's forward calls (its base model, or the thinker)."""
    return adapter_for(model).multimodal


def _args(inputs: dict) -> tuple:
    lengths = inputs.get("feature_attention_mask")
    return (inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), inputs["attention_mask"],
            bool(inputs.get("use_audio_in_video", False)), lengths.sum(-1) if lengths is not None else None,
            inputs.get("video_second_per_grid"))


def _transformers(holder, args):
    return type(holder).get_rope_index(holder, *args)


def _assert_equal(got, expected):
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert torch.equal(g, e), (g - e).abs().max()


@st.composite
def _prompts(draw, config):
    """get_rope_index's arguments for a batch of 1-3 prompts of 1-3 media items each (images, videos or clips
    with their audio, audio alone), laid out as the processor lays them out, padded on one side. Frames up to
    12 merged patches wide against audio down to one token: a video's positions can end above the audio's."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import _get_feat_extract_output_lengths

    merge = config.vision_config.spatial_merge_size
    audio_in_video = draw(st.booleans())
    kinds = ["image", "clip" if audio_in_video else "video", "audio"]
    rows, images, videos, seconds, mels = [], [], [], [], []
    for _ in range(draw(st.integers(1, 3))):
        row = [7] * draw(st.integers(0, 6))
        for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3)):
            grid = (draw(st.integers(1, 4)), merge * draw(st.integers(1, 12)), merge * draw(st.integers(1, 12)))
            mel = draw(st.integers(1, 1600))
            audio = [config.audio_token_id] * int(_get_feat_extract_output_lengths(torch.tensor(mel),
                                                                                   config.audio_config.n_window))
            if kind == "image":
                images.append((1,) + grid[1:])
                row += [config.vision_start_token_id, *[config.image_token_id] * (grid[1] * grid[2] // merge ** 2),
                        config.vision_end_token_id]
            elif kind == "audio":
                mels.append(mel)
                row += [config.audio_start_token_id, *audio, config.audio_end_token_id]
            else:
                videos.append(grid)
                # 0.4, 2/3, 0.8: fractional positions, some of which float32 rounds (0.4 * 3 * 25)
                seconds.append(draw(st.sampled_from([0.4, 0.5, 2 / 3, 0.8, 1.0, 2.0, 4.0])))
                video = [config.video_token_id] * (grid[0] * grid[1] * grid[2] // merge ** 2)
                if kind == "video":
                    row += [config.vision_start_token_id, *video, config.vision_end_token_id]
                else:
                    mels.append(mel)
                    row += [config.vision_start_token_id, config.audio_start_token_id, *video, *audio,
                            config.audio_end_token_id, config.vision_end_token_id]
            row += [7] * draw(st.integers(0, 6))
        rows.append(row)
    width, left = max(map(len, rows)), draw(st.booleans())
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        at = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, at], mask[i, at] = torch.tensor(row), 1

    def tensor(values, dtype=torch.long):
        return torch.tensor(values, dtype=dtype) if values else None

    return ids, tensor(images), tensor(videos), mask, audio_in_video, tensor(mels), tensor(seconds, torch.float32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_positions_and_deltas_equal_transformers(tiny_qwen3, data):
    holder = _holder(tiny_qwen3)
    args = data.draw(_prompts(tiny_qwen3.config))
    assume(args[1] is not None or args[2] is not None)  # without grids both run transformers' text positions
    _assert_equal(fast_get_rope_index(holder, *args), _transformers(holder, args))


@pytest.mark.parametrize("spec", [ClipSpec(video_seconds=8, seed=1),
                                  ClipSpec(video_seconds=6, audio_seconds=2.3, seed=2),
                                  ClipSpec(video_seconds=4, audio_seconds=9.1, fps=3.0, seed=3),
                                  ClipSpec(video_seconds=4, audio_seconds=0, seed=4)],
                         ids=["clip", "short-audio", "long-audio-3fps", "video-only"])
def test_synthetic_prompts_equal_transformers(tiny_qwen3, spec):
    side = _unit(tiny_qwen3) * 4
    inputs = synthetic_clip_inputs(tiny_qwen3.config, ClipSpec(**{**spec.__dict__, "height": side, "width": side}))
    holder = _holder(tiny_qwen3)
    args = _args(inputs)
    _assert_equal(fast_get_rope_index(holder, *args), _transformers(holder, args))


def _unit(model) -> int:
    vision = model.config.vision_config
    return vision.patch_size * vision.spatial_merge_size


def _merge_loop(video: list[float], audio: list[float]) -> list[tuple[str, int]]:
    """The interleave as a plain loop: video while its value <= the audio's, then what is left."""
    i = j = 0
    out = []
    while i < len(video) and j < len(audio):
        if video[i] <= audio[j]:
            out.append(("v", i))
            i += 1
        else:
            out.append(("a", j))
            j += 1
    return out + [("v", k) for k in range(i, len(video))] + [("a", k) for k in range(j, len(audio))]


@given(video=st.lists(st.integers(0, 30), max_size=40), audio=st.lists(st.integers(0, 30), max_size=40),
       scale=st.sampled_from([1.0, 0.5, 2 / 3]))
def test_merge_order_is_the_interleave_loop(video, audio, scale):
    video = sorted(v * scale for v in video)
    audio = sorted(float(a) for a in audio)
    order = merge_order(np.array(video, dtype=np.float64), np.array(audio, dtype=np.float64))
    got = [("v", int(k)) if k < len(video) else ("a", int(k) - len(video)) for k in order]
    assert got == _merge_loop(video, audio)


def test_unsorted_positions_go_to_transformers(tiny_qwen3, monkeypatch):
    """A negative time per grid makes the video's positions decrease: the merge would not be the loop, so
    transformers' own function runs (and gives what it gives)."""
    holder = _holder(tiny_qwen3)
    inputs = synthetic_clip_inputs(tiny_qwen3.config, ClipSpec(video_seconds=4, seed=3, height=_unit(tiny_qwen3) * 4,
                                                               width=_unit(tiny_qwen3) * 4))
    args = list(_args(inputs))
    args[6] = -args[6]
    calls = []
    original = type(holder).get_rope_index
    monkeypatch.setattr(type(holder), "get_rope_index", lambda self, *a: calls.append(1) or original(self, *a))
    _assert_equal(fast_get_rope_index(holder, *args), original(holder, *args))
    assert calls == [1]


def test_host_reads_do_not_grow_with_the_clip(tiny_qwen3):
    holder = _holder(tiny_qwen3)
    side = _unit(tiny_qwen3) * 4
    reads = {}
    for seconds in (4, 16):
        clip = ClipSpec(video_seconds=seconds, seed=1, height=side, width=side)
        args = _args(synthetic_clip_inputs(tiny_qwen3.config, clip))
        with ScalarReads() as fast:
            fast_get_rope_index(holder, *args)
        with ScalarReads() as loop:
            _transformers(holder, args)
        reads[seconds] = (fast.reads, loop.reads)
    assert reads[4][0] == reads[16][0], reads  # per item, not per token
    assert reads[16][1] - reads[16][0] > 2 * 16 * 4, reads  # the loop read each media column (measured: 4x more)


def test_seats_fx_compile_gives_qwen3_the_fast_positions_outside_dynamo(tiny_qwen3):
    model = fresh_copy(tiny_qwen3)
    seats_fx.compile(model, {"retention": 0.1})  # nothing is traced before the first call
    holders = [m for m in model.modules() if "get_rope_index" in m.__dict__]
    assert holders and all(m.get_rope_index.__func__ is fast_get_rope_index for m in holders)
    side = _unit(model) * 4
    args = _args(synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4, seed=2, height=side, width=side)))
    holder = _holder(model)
    torch._dynamo.reset()
    traced = []
    compiled = torch.compile(lambda: (traced.append(torch.compiler.is_compiling()), holder.get_rope_index(*args))[1],
                             backend="eager")
    got = compiled()
    torch._dynamo.reset()
    _assert_equal(got, _transformers(holder, args))
    use_fast_qwen3_rope_index(model, enabled=False)
    assert not [m for m in model.modules() if "get_rope_index" in m.__dict__]


def test_a_model_without_qwen3_positions_is_refused(tiny_thinker):
    with pytest.raises(ValueError, match="Qwen3-Omni"):
        use_fast_qwen3_rope_index(fresh_copy(tiny_thinker))
