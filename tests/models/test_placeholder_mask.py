"""get_placeholder_mask outside Dynamo (seats_fx.placeholder_mask): the same masks and checks, no graph of it,
and seats_fx.compile uses it (what that gains: tests/e2e/test_new_clip_length.py)."""

import pytest
import torch

import seats_fx
from seats_fx.models import adapter_for
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.placeholder_mask import use_eager_placeholder_mask

from eager_towers import fresh_copy


def _holder(model):
    """The module with get_placeholder_mask: the thinker's base model (transformers >= 5.18) or the thinker."""
    return adapter_for(model).multimodal


def _mask_args(model, seconds: int = 4):
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=seconds, seed=seconds))
    ids = inputs["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    videos = int((ids == model.config.video_token_id).sum())
    return ids, embeds, torch.randn(videos, embeds.shape[-1])


@pytest.mark.parametrize("eager", [False, True], ids=["transformers", "eager"])
def test_the_masks_are_unchanged_and_dynamo_traces_none_when_eager(tiny_thinker, eager, monkeypatch):
    model = fresh_copy(tiny_thinker)
    holder = _holder(model)
    ids, embeds, video = _mask_args(model)
    expected = holder.get_placeholder_mask(ids, inputs_embeds=embeds, video_features=video)
    owner = next(kind for kind in type(holder).__mro__ if "get_placeholder_mask" in kind.__dict__)
    original = owner.get_placeholder_mask
    traced = []

    def spy(self, *args, **kwargs):
        traced.append(torch.compiler.is_compiling())  # True while Dynamo traces it into a graph
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, "get_placeholder_mask", spy)
    if eager:
        use_eager_placeholder_mask(model)
    torch._dynamo.reset()
    got = torch.compile(lambda: holder.get_placeholder_mask(ids, inputs_embeds=embeds, video_features=video),
                        backend="eager")()
    torch._dynamo.reset()
    assert traced and any(traced) is not eager
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    use_eager_placeholder_mask(model, enabled=False)
    assert "get_placeholder_mask" not in holder.__dict__


def test_a_mismatched_feature_count_still_raises_eagerly(tiny_thinker):
    model = use_eager_placeholder_mask(fresh_copy(tiny_thinker))
    ids, embeds, video = _mask_args(model)
    with pytest.raises(ValueError, match="Video features and video tokens do not match"):
        _holder(model).get_placeholder_mask(ids, inputs_embeds=embeds, video_features=video[1:])


def test_a_model_without_placeholder_masks_is_refused():
    with pytest.raises(ValueError, match="get_placeholder_mask"):
        use_eager_placeholder_mask(torch.nn.Linear(2, 2))


def test_seats_fx_compile_runs_the_mask_eagerly_for_both_families(tiny_thinker, tiny_qwen3):
    for model in (fresh_copy(tiny_thinker), fresh_copy(tiny_qwen3)):
        seats_fx.compile(model, {"retention": 0.1})  # nothing is traced before the first call
        holders = [m for m in model.modules() if hasattr(type(m), "get_placeholder_mask")]
        assert holders and all("get_placeholder_mask" in m.__dict__ for m in holders)
