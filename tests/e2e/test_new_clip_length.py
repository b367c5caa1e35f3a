"""A new clip length under seats_fx.compile compiles nothing, and the prompt is still pruned like the reference."""

import pytest
import torch

import seats_fx
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

from eager_towers import fresh_copy
from test_headline_usage import assert_pruned_like_the_reference


@pytest.mark.slow
def test_a_new_clip_length_compiles_nothing_and_is_pruned_like_the_reference(tiny_thinker):
    """Before, each new video length recompiled get_placeholder_mask (its check's message specializes the
    feature count): one Dynamo graph per length, about 1 s with Inductor here. The token ids the selection
    needs now come from the embedding lookup's graph, with the model's placeholder ids."""
    from torch._dynamo.utils import counters

    model = fresh_copy(tiny_thinker)
    options = {"retention": 0.3, "inductor": False}  # graph counts do not depend on the lowering
    torch._dynamo.reset()
    seats_fx.compile(model, options)
    new_graphs = []
    # after the first length (6 s: at 4 s the tiny thinker's 64 video tokens equal its width, and Dynamo's
    # duck sizing ties the two), no length compiles anything, a shorter one neither. Measured: 32, 0, 0, 0, 0;
    # before the audio chunk count was marked dynamic and locate stopped comparing every input's size to 3
    # (a guard, under dynamic shapes): 32, 1, 0, 0, 0, and 33, 4, 1, 0 from 4 s before get_placeholder_mask
    # ran outside Dynamo
    for seconds in (6, 8, 10, 4, 12):
        inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, seed=seconds))
        before = counters["stats"]["unique_graphs"]
        with torch.no_grad():
            logits = model(**inputs).logits
        new_graphs.append(counters["stats"]["unique_graphs"] - before)
    torch._dynamo.reset()
    assert new_graphs[1:] == [0, 0, 0, 0], new_graphs
    assert_pruned_like_the_reference(model, inputs, options, logits)


@pytest.mark.slow
def test_a_new_audio_length_compiles_nothing_after_a_4s_first_call(tiny_thinker):
    """A 4 s track gives 200 valid frames after the audio tower's first convolution, as many as a chunk holds:
    Dynamo's duck sizing tied the two sizes, and the next length recompiled the tower's graph. The eager
    chunking hook now hands the chunks in with their count dynamic and a chunk's frames static (measured
    19, 0, 0, 0 new graphs; 19, 1, 0, 0 before)."""
    from torch._dynamo.utils import counters

    from seats_fx.models.synthetic import synthetic_audio_inputs

    model = fresh_copy(tiny_thinker)
    torch._dynamo.reset()
    seats_fx.compile(model, {"retention": 0.3, "inductor": False})
    new_graphs = []
    for seconds in (4, 6, 8):
        inputs = synthetic_audio_inputs(model.config, seconds=seconds, seed=seconds)
        before = counters["stats"]["unique_graphs"]
        with torch.no_grad():
            model(**inputs)
        new_graphs.append(counters["stats"]["unique_graphs"] - before)
        assert seats_fx.last_stats().pruned, seats_fx.last_stats().skipped
    torch._dynamo.reset()
    assert new_graphs[1:] == [0, 0], new_graphs
