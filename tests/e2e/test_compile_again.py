"""seats_fx.compile on a model it compiled before: the second compile replaces the first (a user trying other
options, the device check running its variants on one model). It used to fail at the first call: the
encoder methods generate() calls were the first compile's compiled callables, which torch.compile refuses."""

import torch

import seats_fx
from seats_fx import last_stats
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import seats_forward

from eager_towers import fresh_copy, towers_run_eagerly

FIRST = dict(retention=0.3, progressive_drop_layers=(3, 5), late_block_layer=7, inductor=False)
SECOND = dict(FIRST, retention=0.1)


def test_a_second_compile_with_other_options_replaces_the_first(tiny_thinker):
    model = towers_run_eagerly(fresh_copy(tiny_thinker))
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, audio_seconds=3.5, seed=5))
    with torch.no_grad():
        for options in (FIRST, SECOND):
            seats_fx.compile(model, options)
            model(**inputs)
            reference = seats_forward(tiny_thinker, inputs, options)
            stats = last_stats()
            assert stats.pruned, stats.skipped
            assert torch.equal(stats.kept_positions, reference.kept_positions)
    # the encoder methods generate() calls are compiled once, from the model's own methods
    video = model.model.get_video_features if hasattr(model, "model") else model.get_video_features
    assert not hasattr(getattr(video, "_seats_original_method"), "_seats_original_method")
