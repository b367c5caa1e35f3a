"""The host-side TMRoPE chunk split (seats_fx.rope_index) against transformers' own loop: the same bounds on
any input (hypothesis), transformers' loop where the closed form does not apply, and on a model the same
logits with one host read per token fewer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as qwen2_5_omni

from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.rope_index import chunk_bounds, use_fast_rope_index

from scalar_reads import ScalarReads

TRANSFORMERS_SPLIT = qwen2_5_omni.Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_chunked_index


def transformers_bounds(values: torch.Tensor, chunk, remove) -> list[tuple[int, int]]:
    return TRANSFORMERS_SPLIT(None, values, chunk, remove)  # self is not used


@st.composite
def sorted_positions(draw):
    """Sorted integer positions as get_rope_index makes them (repeats, gaps of several chunks, values below
    the removed index), a chunk size and the removed index (an int or a 0-d tensor, as transformers passes)."""
    steps = draw(st.lists(st.integers(0, 60), min_size=0, max_size=80))
    start = draw(st.integers(-40, 120))
    values = torch.tensor(np.cumsum([start] + steps)[: len(steps) + draw(st.integers(0, 1))], dtype=torch.long)
    chunk = draw(st.integers(1, 50))
    remove = draw(st.integers(-20, 100))
    return values, chunk, torch.tensor(remove) if draw(st.booleans()) else remove


@settings(max_examples=300, deadline=None)
@given(sorted_positions())
def test_bounds_equal_transformers_loop(case):
    values, chunk, remove = case
    assert chunk_bounds(values, chunk, remove) == transformers_bounds(values, chunk, remove)


@pytest.mark.parametrize("case", [
    (torch.tensor([5, 3, 9]), 2, 0),  # not sorted
    (torch.tensor([0.0, 2.5, 7.0]), 2, 0),  # not integer
    (torch.tensor([0, 3, 9]), 0, 0),  # no chunk size
    (torch.tensor([0, 3, 9]), 2.5, 0),  # a float chunk size
], ids=["unsorted", "float-values", "zero-chunk", "float-chunk"])
def test_outside_the_closed_form_it_defers_to_transformers(case):
    values, chunk, remove = case
    assert chunk_bounds(values, chunk, remove) is None


def test_a_model_gives_the_same_logits_with_a_read_per_token_fewer():
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=2))).eval()
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=6, seed=1))
    ids = inputs["input_ids"][0]
    video = int((ids == model.config.video_token_id).sum())
    audio = int((ids == model.config.audio_token_id).sum())
    assert video and audio and inputs.get("use_audio_in_video", True)

    def run():
        with torch.no_grad(), ScalarReads() as reads:
            logits = model(**inputs).logits
        return logits, reads.reads

    expected, loop_reads = run()
    use_fast_rope_index(model)
    got, fast_reads = run()
    assert torch.equal(got, expected)
    # the loop read each video and audio position once; the split reads the removed index once per modality
    assert loop_reads - fast_reads >= video + audio - 2
    use_fast_rope_index(model, enabled=False)
    _, back = run()
    assert back == loop_reads


def test_a_model_without_chunking_is_refused():
    with pytest.raises(ValueError, match="TMRoPE chunking"):
        use_fast_rope_index(torch.nn.Linear(2, 2))


def test_seats_fx_compile_gives_qwen2_5_omni_the_split():
    import seats_fx
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=8))).eval()
    seats_fx.compile(model, {"retention": 0.1})  # nothing is traced before the first call
    holders = [m for m in model.modules() if hasattr(type(m), "get_chunked_index")]
    assert holders and all("get_chunked_index" in m.__dict__ and "get_rope_index" in m.__dict__ for m in holders)


@pytest.mark.parametrize("fast", [False, True], ids=["transformers", "fast"])
def test_get_rope_index_runs_outside_dynamo_with_the_fast_split(fast, monkeypatch):
    """Its tensors live on the host; traced, Inductor made them a CPU graph (13 ms on an H200's host). With
    the fast split a compiled caller runs it eagerly (a graph break at the call), positions unchanged."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=1))).eval()
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4, seed=2))
    args = (inputs["input_ids"], None, inputs["video_grid_thw"], inputs["attention_mask"], True,
            inputs["feature_attention_mask"].sum(-1), inputs.get("video_second_per_grid"))
    expected = model.get_rope_index(*args)
    traced = []
    owner = qwen2_5_omni.Qwen2_5OmniPreTrainedModelForConditionalGeneration  # the thinker's and its base model's
    original = owner.get_rope_index

    def spy(self, *args, **kwargs):
        traced.append(torch.compiler.is_compiling())  # True while Dynamo traces it into a graph
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, "get_rope_index", spy)
    if fast:
        use_fast_rope_index(model)
    torch._dynamo.reset()
    got = torch.compile(lambda: model.get_rope_index(*args), backend="eager")()
    torch._dynamo.reset()
    assert traced and any(traced) is not fast
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
