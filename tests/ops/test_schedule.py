import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.schedule import count_at_level, scaled_layers, solve_schedule


@st.composite
def schedules(draw):
    depth = draw(st.integers(4, 64))
    cut = draw(st.one_of(st.none(), st.integers(3, depth)))
    limit = (cut - 1) if cut else depth - 1
    drops = tuple(sorted(draw(st.sets(st.integers(1, limit), min_size=0, max_size=min(4, limit)))))
    target = draw(st.floats(0.01, 1.0))
    encoder = draw(st.floats(0.01, 1.0))
    return depth, cut, drops, target, encoder


@settings(max_examples=200)
@given(schedules())
def test_mean_level_hits_target_when_reachable(args):
    depth, cut, drops, target, encoder = args
    s = solve_schedule(target, encoder, drops, cut, depth)
    assert len(s.layer_levels) == depth
    assert all(a >= b - 1e-12 for a, b in zip(s.step_levels, s.step_levels[1:]))
    assert all(0.0 <= level <= encoder + 1e-12 for level in s.layer_levels)
    no_drop = solve_schedule(1.0, encoder, (), cut, depth).mean_level
    if not drops or no_drop <= target:
        assert s.step_levels == tuple(encoder for _ in drops)
    else:
        floor = solve_schedule(1e-9, encoder, drops, cut, depth).mean_level  # everything dropped
        assert floor <= no_drop
        assert s.mean_level == pytest.approx(max(target, floor), abs=1e-9)


def test_authors_7b_schedule_drops_more_in_deeper_steps():
    s = solve_schedule(0.1, 0.14, (16, 18, 20), 24, 28)
    steps = [0.14, *s.step_levels]
    drops = [a - b for a, b in zip(steps, steps[1:])]
    assert drops[0] < drops[1] < drops[2]
    assert s.mean_level == pytest.approx(0.1)
    assert s.layer_levels[23:] == (0.0,) * 5 and s.layer_levels[:16] == (0.14,) * 16


def test_scaled_layers_reproduce_authors_defaults():
    assert scaled_layers((16 / 28, 18 / 28, 20 / 28), 28) == (16, 18, 20)
    assert scaled_layers((16 / 28, 18 / 28, 20 / 28), 36) == (21, 23, 26)
    assert scaled_layers((0.5, 0.5, 0.5), 8) == (4, 5, 6)


def test_count_at_level_keeps_at_least_one():
    assert count_at_level(0.0, 10) == 1 and count_at_level(1.0, 10) == 10 and count_at_level(0.5, 0) == 0
