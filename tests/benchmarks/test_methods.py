"""The benchmark's methods are valid seats configurations that process the retention they promise."""

import pytest

from bench.methods import METHODS
from seats_fx.config import SeatsConfig
from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter
from seats_fx.stage_plan import StagePlan

WINDOWS = [(288, 50)] * 30  # a 60 s clip's (video, audio) tokens per window


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("retention", [0.1, 0.2, 0.3])
def test_each_method_processes_the_retention_it_is_given(method, retention):
    config = SeatsConfig(**METHODS[method](retention, 28))
    plan = StagePlan.resolve(config, 28, Qwen2_5OmniAdapter.drop_layer_fractions, Qwen2_5OmniAdapter.late_block_fraction)
    tokens = plan.layer_token_counts(0, WINDOWS, stage1=config.stage1)
    media = sum(v + a for v, a in WINDOWS)
    assert abs(sum(tokens) / (28 * media) - retention) < 0.01


@pytest.mark.parametrize("retention", [0.1, 0.2, 0.3])
def test_every_method_resolves_on_the_cpu_benchmarks_six_layers_and_seats_processes_its_retention(retention):
    """bench.prefill's truncated 6-layer decoder (late block at 5): SEATS's default stage 1 would average below
    R there, which SeatsConfig refuses; its method keeps enough instead. The others resolve as they are."""
    media = sum(v + a for v, a in WINDOWS)
    for method, options in METHODS.items():
        config = SeatsConfig(**options(retention, 6))
        plan = StagePlan.resolve(config, 6, Qwen2_5OmniAdapter.drop_layer_fractions,
                                 Qwen2_5OmniAdapter.late_block_fraction)
        if method == "SEATS":
            tokens = plan.layer_token_counts(0, WINDOWS, stage1=config.stage1)
            assert abs(sum(tokens) / (6 * media) - retention) < 0.01


def test_baselines_differ_from_seats_only_where_they_should():
    seats = SeatsConfig(**METHODS["SEATS"](0.1, 28))
    fastv = SeatsConfig(**METHODS["FastV"](0.1, 28))
    assert (fastv.stage1, fastv.stage3, fastv.stage2_allocation, fastv.progressive_drop_layers) == \
        (False, False, "global", (2,))
    for name, selector in (("DivPrune", "diversity"), ("random", "random"), ("uniform temporal", "uniform")):
        config = SeatsConfig(**METHODS[name](0.1, 28))
        assert (config.stage1_selector, config.stage2, config.stage3) == (selector, False, False)
    assert seats.stage1_selector == "weighted_diversity" and seats.stage2_allocation == "windows"
