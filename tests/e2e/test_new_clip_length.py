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
    for seconds in (4, 6, 8, 10):  # the first lengths compile the dynamic graphs (measured: 33, 4, 1, then 0)
        inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, seed=seconds))
        before = counters["stats"]["unique_graphs"]
        with torch.no_grad():
            logits = model(**inputs).logits
        new_graphs.append(counters["stats"]["unique_graphs"] - before)
    torch._dynamo.reset()
    assert new_graphs[-1] == 0, new_graphs
    assert_pruned_like_the_reference(model, inputs, options, logits)
