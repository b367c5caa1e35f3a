"""StagePlan: keep-everything configs resolve to no stage; unreachable retentions are refused by name."""

import pytest

from seats_fx.config import SeatsConfig
from seats_fx.models import Qwen2_5OmniAdapter
from seats_fx.stage_plan import StagePlan, reachable_retention

FRACTIONS = (Qwen2_5OmniAdapter.drop_layer_fractions, Qwen2_5OmniAdapter.late_block_fraction)


def resolve(depth: int, **options) -> StagePlan:
    return StagePlan.resolve(SeatsConfig(**options), depth, *FRACTIONS)


@pytest.mark.parametrize("options", [dict(retention=1.0), dict(video_retention=1.0, audio_retention=1.0),
                                     dict(retention=1.0, stage3=True, late_block_layer=4)])
def test_keep_everything_resolves_to_no_stage(options):
    plan = resolve(8, **options)
    assert not plan.selects and not plan.stage1 and plan.drop_layers == () and plan.late_block_layer is None
    assert plan.video.mean_level == plan.audio.mean_level == 1.0


@pytest.mark.parametrize("depth,late", [(8, 7), (28, 24), (36, 31)])
def test_a_retention_above_the_reachable_maximum_is_refused_naming_it(depth, late):
    plan = resolve(depth, retention=0.1)
    assert plan.late_block_layer == late  # the authors' late block, scaled by depth
    most = reachable_retention(depth, late)
    assert most == pytest.approx((late - 1) / depth)
    reachable = resolve(depth, retention=round(most - 0.005, 3))
    assert reachable.video.mean_level == pytest.approx(round(most - 0.005, 3), abs=1e-6)
    with pytest.raises(ValueError, match=rf"retention=0.95 cannot be reached on a {depth}-layer decoder.*"
                                         rf"at most {most:.4f}.*stage3=False or a late_block_layer after {late}"):
        resolve(depth, retention=0.95)
    # per-modality targets name their own field
    with pytest.raises(ValueError, match=r"SeatsConfig.audio_retention=0.99 .*audio tokens"):
        resolve(depth, video_retention=0.1, audio_retention=0.99)
    # without the late block any retention is reachable
    assert resolve(depth, retention=0.95, stage3=False).video.mean_level == pytest.approx(0.95, abs=1e-6)


def test_a_stage1_too_small_for_an_early_late_block_names_the_scale_that_reaches():
    with pytest.raises(ValueError, match=r"encoder_ratio_scale >= 2.000"):
        resolve(8, retention=0.3, progressive_drop_layers=(2,), late_block_layer=5)
    assert resolve(8, retention=0.3, progressive_drop_layers=(2,), late_block_layer=5,
                   encoder_ratio_scale=2.0).video.mean_level == pytest.approx(0.3, abs=1e-6)


def test_retentions_below_one_give_different_plans_up_to_the_maximum():
    means = [resolve(28, retention=r).video.mean_level for r in (0.5, 0.7, 0.8)]
    assert means == pytest.approx([0.5, 0.7, 0.8], abs=1e-6)


def test_a_plan_is_resolved_once_per_config_and_depth():
    """Every prefill resolves its plan (the schedule's bisection: host time while the GPU waits); equal inputs
    give the one frozen plan, other inputs their own, and a refused config is refused every time."""
    first, again = resolve(28, retention=0.1), resolve(28, retention=0.1)
    assert first is again
    assert resolve(28, retention=0.2) != first and resolve(36, retention=0.1).depth == 36
    for _ in range(2):
        with pytest.raises(ValueError, match="cannot be reached"):
            resolve(8, retention=0.95)
