import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.config import SeatsConfig
from seats_fx.models import adapter_for
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.schedule import count_at_level
from seats_fx.reference import seats_forward

KEEP_ALL = SeatsConfig(retention=1.0, stage3=False)


@settings(max_examples=40)
@given(st.integers(1, 8), st.sampled_from([None, 1.0, 5.0]), st.integers(0, 1000))
def test_keep_all_reproduces_unpruned_logits(tiny_thinker, seconds, audio_seconds, seed):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=seconds, audio_seconds=audio_seconds,
                                                                  seed=seed))
    with torch.no_grad():
        expected = tiny_thinker(**inputs).logits
    result = seats_forward(tiny_thinker, inputs, KEEP_ALL)
    assert result.kept_positions.tolist() == [list(range(inputs["input_ids"].shape[1]))]
    torch.testing.assert_close(result.logits, expected, atol=1e-5, rtol=0)


@settings(max_examples=40)
@given(st.integers(2, 10), st.floats(0.05, 0.6), st.floats(0.05, 0.6), st.integers(0, 1000))
def test_kept_counts_match_config_budgets(tiny_thinker, seconds, video_retention, audio_retention, seed):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=seconds, seed=seed))
    config = SeatsConfig(video_retention=video_retention, audio_retention=audio_retention,
                         progressive_drop_layers=(3, 5), late_block_layer=7)
    result = seats_forward(tiny_thinker, inputs, config)
    encoded = adapter_for(tiny_thinker).encode(inputs, 2.0)
    layout = encoded.layout
    n_video, n_audio = layout.count(VIDEO), layout.count(AUDIO)
    stage1, step1, step2, stage3 = result.stages
    assert [s.stage for s in result.stages] == ["stage1", "stage2", "stage2", "stage3"]
    # stage 1: per (window, modality) group max(1, round(level * size))
    expected_video = sum(count_at_level(result.plan.video.encoder_level, int(((layout.window[0] == w) &
                         (layout.modality[0] == VIDEO)).sum())) for w in range(layout.num_windows(0)))
    expected_audio = sum(count_at_level(result.plan.audio.encoder_level, int(((layout.window[0] == w) &
                         (layout.modality[0] == AUDIO)).sum())) for w in range(layout.num_windows(0)))
    assert (stage1.counts["video"], stage1.counts["audio"]) == (expected_video, expected_audio)
    # stage 2: exact totals from the schedule
    for step, record in enumerate((step1, step2)):
        vk, ak = result.plan.stage2_keep(step, n_video, n_audio)
        before = result.stages[step].counts
        assert record.counts["video"] + record.counts["audio"] == min(vk + ak, before["video"] + before["audio"])
    assert stage3.counts == {"text": stage1.counts["text"], "video": 0, "audio": 0}
    text = int((layout.modality[0] == 0).sum())
    assert all(c["text"] == text for c in result.layer_counts)
    # layers see what the stages left: 1-3 stage1, 4-5 step1, 6 step2, 7-8 text only
    assert result.layer_counts[0] == stage1.counts and result.layer_counts[3] == step1.counts
    assert result.layer_counts[5] == step2.counts and result.layer_counts[6] == stage3.counts
    assert result.logits.shape[1] == text


def test_kept_tokens_keep_their_original_tmrope_positions(tiny_thinker):
    """Stage-1-only SEATS == the model's own decoder run on the kept embeddings at their original positions."""
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=6))
    config = SeatsConfig(retention=0.2, stage2=False, stage3=False)
    result = seats_forward(tiny_thinker, inputs, config)
    keep = result.stages[0].kept_positions[0]
    assert len(keep) < inputs["input_ids"].shape[1]
    encoded = adapter_for(tiny_thinker).encode(inputs, 2.0)
    with torch.no_grad():
        hidden = tiny_thinker.model.language_model(
            inputs_embeds=encoded.inputs_embeds[:, keep], position_ids=encoded.position_ids[:, :, keep],
            attention_mask=encoded.attention_mask[:, keep]).last_hidden_state
        expected = tiny_thinker.lm_head(hidden)
    torch.testing.assert_close(result.logits, expected, atol=1e-5, rtol=0)


def test_stage2_relevance_equals_eager_attention_row(tiny_thinker):
    """The q/k recomputation equals the last row of the layer's eager attention probabilities."""
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=6))
    config = SeatsConfig(retention=0.3, progressive_drop_layers=(3,), late_block_layer=7)
    result = seats_forward(tiny_thinker, inputs, config)
    keep = result.stages[0].kept_positions[0]
    encoded = adapter_for(tiny_thinker).encode(inputs, 2.0)
    eager = copy.deepcopy(tiny_thinker)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = eager.model.language_model(
            inputs_embeds=encoded.inputs_embeds[:, keep], position_ids=encoded.position_ids[:, :, keep],
            attention_mask=encoded.attention_mask[:, keep], output_attentions=True).attentions
    expected = attentions[2][:, :, -1, :].mean(1)
    torch.testing.assert_close(result.stages[1].relevance, expected, atol=1e-6, rtol=1e-4)


def test_batch_above_one_is_rejected_clearly(tiny_thinker):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=2))
    batched = {k: (torch.cat([v, v]) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    with pytest.raises(NotImplementedError, match="batch 2"):
        seats_forward(tiny_thinker, batched, SeatsConfig())


def test_unknown_model_is_rejected_with_supported_families():
    with pytest.raises(ValueError, match="qwen2_5_omni"):
        seats_forward(torch.nn.Linear(2, 2), {}, SeatsConfig())


@settings(max_examples=40)
@given(st.integers(1, 10), st.floats(0.05, 0.6), st.floats(0.05, 0.6), st.booleans())
def test_planned_layer_lengths_equal_what_the_reference_runs(tiny_thinker, seconds, video_retention,
                                                              audio_retention, stage1):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=seconds))
    config = SeatsConfig(video_retention=video_retention, audio_retention=audio_retention, stage1=stage1,
                         progressive_drop_layers=(3, 5), late_block_layer=7)
    result = seats_forward(tiny_thinker, inputs, config)
    layout = adapter_for(tiny_thinker).encode(inputs, 2.0).layout
    windows = [(int(((layout.window[0] == w) & (layout.modality[0] == VIDEO)).sum()),
                int(((layout.window[0] == w) & (layout.modality[0] == AUDIO)).sum()))
               for w in range(layout.num_windows(0))]
    text = int((layout.modality[0] == 0).sum())
    assert result.plan.layer_token_counts(text, windows, stage1) == [sum(c.values()) for c in result.layer_counts]
