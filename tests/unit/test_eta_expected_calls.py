"""The ETA's point counts what the run has not shown yet at the stored runs' shares.

Stage A's early stops and the starting prompt's place among the finalists were counted at their
maximum until they happened, which made the point too late on every replayed run; now it counts
them at `PRIOR_EARLY_STOP` and `PRIOR_BASELINE_KEPT`, and the run's facts replace them.
"""

from __future__ import annotations

import pytest

from drpo.nodes.eta import PRIOR_BASELINE_KEPT, PRIOR_EARLY_STOP, RunClock
from tests.unit.test_eta_follows_the_run import _call, _estimate


def _roles(clock: RunClock) -> set[str]:
    return set(clock.planned(0.0, "most"))


def test_before_anything_happened_the_point_lies_between_the_bounds_at_the_priors() -> None:
    clock = RunClock(_estimate())
    shape = clock.estimate.shape
    assert shape is not None and shape.example_round["optimizer"] > 0
    most = clock.planned(0.0, "most")
    expected = clock.planned(0.0, "expected")
    fewest = clock.planned(0.0, "fewest")
    rounds = shape.stage_a["optimizer"] / shape.example_round["optimizer"]
    for role in _roles(clock):
        saved = PRIOR_EARLY_STOP * rounds * shape.example_round.get(role, 0.0)
        saved += PRIOR_BASELINE_KEPT * shape.per_finalist.get(role, 0.0)
        assert most[role] - expected[role] == pytest.approx(saved)
        assert fewest[role] <= expected[role] <= most[role]
    assert sum(fewest.values()) < sum(expected.values()) < sum(most.values())


def test_stage_a_s_end_replaces_the_early_stop_prior_with_the_calls_it_made() -> None:
    clock = RunClock(_estimate())
    for role in ("selector", "judge", "optimizer", "judge"):
        clock.call_finished(_call(role, stage="examples"), now=10.0)
    clock.stage_a_finished()
    most = clock.planned(0.0, "most")
    expected = clock.planned(0.0, "expected")
    shape = clock.estimate.shape
    assert shape is not None
    # Only the validation round's extra finalist is still a chance.
    for role in _roles(clock):
        gap = PRIOR_BASELINE_KEPT * shape.per_finalist.get(role, 0.0)
        assert most[role] - expected[role] == pytest.approx(gap)


def test_once_prompts_are_ranked_the_starting_prompts_place_is_a_fact() -> None:
    clock = RunClock(_estimate())
    clock.stage_a_finished()
    clock.level_finished(0, 1, {"L0-root": 4.8})
    assert not clock.ranked()
    clock.level_finished(1, 2, {"L1-a": 4.9, "L1-b": 4.5})
    assert clock.ranked() and clock.baseline_kept()
    assert clock.planned(0.0, "expected") == pytest.approx(clock.planned(0.0, "fewest"))
    clock.level_finished(2, 4, {"L2-a": 4.95, "L2-b": 4.97})
    assert not clock.baseline_kept()
    assert clock.planned(0.0, "expected") == pytest.approx(clock.planned(0.0, "most"))


def test_the_calls_expected_shown_to_the_user_are_the_points() -> None:
    clock = RunClock(_estimate())
    expected = sum(clock.planned(clock.rejected_share(), "expected").values())
    assert clock.calls_expected == round(expected)
    assert clock.calls_expected < round(sum(clock.planned(None, "most").values()))
