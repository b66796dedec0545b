"""What issue #16's replays showed the ETA after the first calls missing: proposals dropped as
repeats count towards the unscored share, and the range's low end counts the calls stage A's early
stops and the baseline among the finalists can still save."""

from __future__ import annotations

import pytest

from drpo.nodes.eta import HIGH_REJECTED_SHARE, RunClock
from drpo.state.events import CallFinished
from tests.unit.test_eta_follows_the_run import _call, _estimate


def _rewrite(level: int) -> CallFinished:
    call = _call("optimizer", stage="search")
    return call.model_copy(update={"level": level})


def test_a_proposal_dropped_as_a_repeat_counts_as_unscored() -> None:
    clock = RunClock(_estimate())
    # Level 1: the root's two proposals came back with the same text; one was scored.
    for _ in range(2):
        clock.call_finished(_rewrite(1), now=10.0)
    clock.level_finished(0, 1)
    clock.level_finished(1, 1)
    assert clock.rejected_share() == pytest.approx(0.5)
    # Level 2 is then expected to score the beam prompt's proposals at that share, not all.
    assert clock.calls_expected == round(sum(clock.planned(0.5).values()))
    assert clock.calls_expected < round(sum(clock.planned(0.0).values()))


def test_a_beam_prompt_carried_on_after_every_proposal_was_rejected_is_no_kept_proposal() -> None:
    clock = RunClock(_estimate())
    for _ in range(2):
        clock.call_finished(_rewrite(1), now=10.0)
    clock.proposal_rejected(1, "L0-root")
    clock.proposal_rejected(1, "L0-root")
    clock.level_finished(0, 1)
    clock.level_finished(1, 1)  # the root, carried on as the level's one child
    assert clock.rejected_share() == pytest.approx(1.0)


def test_the_low_end_counts_stage_a_stopping_early_and_the_baseline_among_the_finalists() -> None:
    clock = RunClock(_estimate())
    shape = clock.estimate.shape
    assert shape is not None and shape.example_round["optimizer"] > 0
    clock.call_finished(_call("selector", stage="examples"), now=10.0)
    rounds = shape.stage_a["optimizer"] / shape.example_round["optimizer"]
    most = clock.planned(HIGH_REJECTED_SHARE, "most")
    fewest = clock.planned(HIGH_REJECTED_SHARE, "fewest")
    for role in ("judge", "optimizer"):
        saved = rounds * shape.example_round.get(role, 0.0) + shape.per_finalist.get(role, 0.0)
        assert most[role] - fewest[role] == pytest.approx(saved)
    eta = clock.eta(10.0)
    assert eta is not None and eta.low is not None
    assert eta.low < clock.remaining(10.0, share=HIGH_REJECTED_SHARE)  # type: ignore[operator]
    # Rounds already made cannot be saved any more.
    clock.call_finished(_call("optimizer", stage="examples"), now=20.0)
    after_one = clock.planned(HIGH_REJECTED_SHARE, "fewest")
    assert after_one["optimizer"] == pytest.approx(fewest["optimizer"] + 1)
