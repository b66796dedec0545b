"""The ETA follows what the run does: rejected proposals, stage A's end, a resumed run's reply
cache, the gaps between calls and a call in flight longer than predicted (issue #16)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from drpo.backends.speed_probe import ServerSpeed
from drpo.checkpoints.store import RunStore
from drpo.cli import progress as cli_progress
from drpo.cli.progress import ProgressPrinter, eta_text
from drpo.graph.api import _ObservedLedger
from drpo.nodes.context import RunData
from drpo.nodes.estimate import Estimate, RoleEstimate, estimate_run
from drpo.nodes.eta import HIGH_REJECTED_SHARE, RunClock
from drpo.nodes.rewrite import general_children
from drpo.state.events import (
    CallFinished,
    CallStarted,
    LevelDone,
    ProposalRejected,
    RunEvent,
    RunStarted,
    StepFinished,
)
from drpo.state.settings import load_settings
from drpo.state.types import Candidate, Example, Query

START = "You are a helpful assistant."


def _estimate(queries_per_level: int = 1) -> Estimate:
    """A real estimate: width 2, 2 proposals per beam prompt, 2 levels, 2 finalists."""
    settings = load_settings(
        overrides={
            "search": {
                "initial_prompt": START,
                "width": 2,
                "actions": 2,
                "depth": 2,
                "batch_size": queries_per_level,
                "validation_size": 2,
                "finalists": 2,
                "skip_threshold": 5.0,
            }
        }
    )
    data = RunData(
        train=[Query(id=f"t{i}", query=f"train question {i}") for i in range(10)],
        validation=[Query(id=f"v{i}", query=f"validation question {i}") for i in range(2)],
        examples=[Example(id=f"e{i}", query=f"q{i}", answer=f"a{i}") for i in range(2)],
    )
    return estimate_run(settings, data)


def _call(role: str, seconds: float = 10.0, outcome: str = "ok", stage: str = "") -> CallFinished:
    return CallFinished(
        role=role,
        model="m",
        endpoint="e",
        outcome=outcome,  # type: ignore[arg-type]
        prompt_tokens=700 if outcome == "ok" else 0,
        completion_tokens=80 if outcome == "ok" else 0,
        seconds=seconds if outcome == "ok" else 0.0,
        stage=stage,
    )


def test_the_split_estimate_adds_up_to_the_estimate() -> None:
    estimate = _estimate(queries_per_level=2)
    assert estimate.shape is not None
    planned = estimate.shape.calls()
    assert {role: round(calls) for role, calls in planned.items()} == {
        role: entry.calls for role, entry in estimate.roles.items()
    }


def test_a_rejection_takes_off_its_scoring_and_the_rewrites_and_children_it_would_have_led_to() -> (
    None
):
    estimate = _estimate(queries_per_level=2)
    shape = estimate.shape
    assert shape is not None
    planned = shape.calls()
    # Level 1: the root's two proposals, one rejected: 1 child instead of 2; level 2 then
    # rewrites a beam of 1 (2 proposals, not 4); 1 + 1 + 2 prompts seen still exceed the
    # 2 finalists, so the validation round keeps its 3.
    after = shape.calls(rejected={1: {"L0-root": 1}})
    per_child = shape.levels[1][1]
    assert planned["base"] - after["base"] == pytest.approx(3 * per_child["base"])
    assert planned["judge"] - after["judge"] == pytest.approx(3 * per_child["judge"])
    assert planned["optimizer"] - after["optimizer"] == pytest.approx(
        shape.levels[2][0]["optimizer"]
    )
    assert planned["selector"] == after["selector"]
    # Both proposals rejected: the beam prompt is carried on as the level's one child.
    assert shape.calls(rejected={1: {"L0-root": 2}}) == after
    # A finished level's children are a fact that replaces the count.
    assert shape.calls(children={1: 1}) == after


def test_the_clock_drops_a_rejected_proposals_calls_at_once() -> None:
    clock = RunClock(_estimate())
    for _ in range(3):
        clock.call_finished(_call("selector"), now=10.0)
    before, expected = clock.remaining(10.0, share=0.0), clock.calls_expected
    clock.proposal_rejected(1, "L0-root")
    assert clock.calls_expected < expected
    after = clock.remaining(10.0, share=0.0)
    assert before is not None and after is not None and after < before


def test_before_the_runs_own_rejections_are_known_the_eta_is_a_range_around_the_prior() -> None:
    clock = RunClock(_estimate())
    clock.call_finished(_call("selector"), now=10.0)
    eta = clock.eta(10.0)
    assert eta is not None and eta.low is not None and eta.high is not None
    assert eta.low < eta.seconds < eta.high
    assert eta.high == pytest.approx(clock.remaining(10.0, share=0.0, bound="most"))
    assert eta.low == pytest.approx(
        clock.remaining(10.0, share=HIGH_REJECTED_SHARE, bound="fewest")
    )
    text = eta_text(eta)
    assert "to" in text and "as the search prunes itself" in text
    # Level 1 scored both proposals: the run's own share (none rejected) replaces the prior.
    clock.level_finished(0, 1)
    clock.level_finished(1, 2)
    known = clock.eta(10.0)
    assert known is not None and known.low is None and known.high is None
    assert known.seconds == pytest.approx(clock.remaining(10.0, share=0.0))


def test_stage_a_counts_the_calls_it_made_once_it_ends() -> None:
    clock = RunClock(_estimate())
    assert clock.estimate.shape is not None
    planned_judge = clock.planned(0.0, "most")["judge"]
    # Both examples scored 5 on every aspect at once: one choice and one judgement each.
    for role in ("selector", "selector", "judge", "judge"):
        clock.call_finished(_call(role, stage="examples"), now=10.0)
    assert clock.planned(0.0, "most")["judge"] == planned_judge
    clock.stage_a_finished()
    stage_a_judge = clock.estimate.shape.stage_a["judge"]
    assert clock.planned(0.0, "most")["judge"] == pytest.approx(planned_judge - stage_a_judge + 2)


def _judge_estimate(calls: int) -> Estimate:
    estimate = Estimate()
    estimate.roles["judge"] = RoleEstimate(calls, 700 * calls, 80 * calls)
    return estimate


def test_a_resumed_run_takes_its_stored_rates_and_its_reply_cache_replays_count_once() -> None:
    clock = RunClock(_judge_estimate(20))
    # 10 stored calls of 10 s, two at a time: 50 s from the first start to the last end.
    clock.resumed_from([_call("judge") for _ in range(10)], span=50.0)
    assert clock.calls_done == 10
    assert clock.remaining(0.0) == pytest.approx(10 * 10.0 / 2)
    # The interrupted tasks re-read 3 of those calls from the reply cache in no time.
    for _ in range(3):
        clock.call_finished(_call("judge", outcome="cache_hit"), now=1.0)
    assert clock.calls_done == 10
    assert clock.remaining(1.0) == pytest.approx(10 * 10.0 / 2)


def test_gaps_between_calls_count_as_wall_time() -> None:
    # A stub server answers in 0.1 s, but the run spends 0.9 s between calls: 1 s a call.
    clock = RunClock(_judge_estimate(20))
    for i in range(10):
        clock.call_started(now=i * 1.0, role="judge")
        clock.call_finished(_call("judge", seconds=0.1), now=i * 1.0 + 0.1)
    remaining = clock.remaining(now=9.9)
    assert remaining == pytest.approx(10 * 1.0, rel=0.02)


def test_a_call_in_flight_counts_down_and_past_its_predicted_time_the_eta_says_over() -> None:
    clock = RunClock(_judge_estimate(20))
    for i in range(10):  # 10 s a call, one after another
        clock.call_started(now=i * 10.0, role="judge")
        clock.call_finished(_call("judge"), now=i * 10.0 + 10.0)
    clock.call_started(now=100.0, role="judge")
    sent = clock.eta(100.0)
    on_time = clock.eta(105.0)
    assert sent is not None and on_time is not None and on_time.overdue_call is None
    # Half of the call's predicted 10 s is behind it: 5 s less to go (always 1 in flight).
    assert sent.seconds - on_time.seconds == pytest.approx(5.0)
    late = clock.eta(160.0)
    assert late is not None and late.overdue_call == pytest.approx(60.0)
    text = eta_text(late)
    assert text.startswith("ETA over ") and "a call has run 60 s, longer than expected" in text
    # Once it finishes, the ETA comes from the rates again.
    clock.call_finished(_call("judge", seconds=90.0), now=190.0)
    done = clock.eta(190.0)
    assert done is not None and done.overdue_call is None


def test_a_plain_status_line_never_shows_a_passed_eta_while_a_call_runs_long(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    now = [0.0]
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: now[0])
    with ProgressPrinter(tmp_path / "absent.db", estimate=_judge_estimate(20)) as printer:
        printer(RunStarted(run_id="r1", store="s"))
        printer(CallStarted(role="judge", endpoint="e"))
        now[0] = 3.0
        printer(_call("judge", seconds=3.0))
        printer(CallStarted(role="judge", endpoint="e"))
        first = printer.status()
        now[0] = 33.0  # the next status line, 30 s on: the call has run 30 s of its 3
        second = printer.status()
    assert "ETA about 57 s" in first
    assert "ETA over" in second and "a call has run 30 s" in second


def test_the_ledger_reports_each_rejected_proposal_as_an_event(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", {}, [])
    events: list[RunEvent] = []
    ledger = _ObservedLedger(store, "r1", events.append)
    ctx: Any = types.SimpleNamespace(settings=load_settings(), ledger=ledger, run_id="r1")
    parent = Candidate(id="L0-root", prompt=START)
    fitted = Candidate(
        id="L1-fit", prompt=START + " Solve roommate issues about cleaning.", parent_id="L0-root"
    )
    roommate = "How do I deal with my roommate's issues about cleaning the kitchen?"
    general_children(ctx, [fitted], parent, [roommate], level=1)
    store.close()
    (event,) = events
    assert isinstance(event, ProposalRejected)
    assert (event.candidate_id, event.parent_id, event.level) == ("L1-fit", "L0-root", 1)
    assert "roommate" in event.reason


def test_the_progress_display_passes_the_runs_facts_to_the_clock(tmp_path: Path) -> None:
    with ProgressPrinter(tmp_path / "absent.db", estimate=_estimate()) as printer:
        assert printer.clock is not None
        printer(RunStarted(run_id="r1", store="s"))
        printer(_call("judge", stage="examples"))
        printer(StepFinished(node="optimize_example"))
        printer(StepFinished(node="collect_examples"))
        printer(ProposalRejected(candidate_id="L1-a", parent_id="L0-root", level=1, reason="topic"))
        printer(LevelDone(level=1, depth_limit=2, children=1, unscored=0, beam=()))
        assert printer.clock.examples_finished == 1
        assert printer.clock.stage_a_calls == {"judge": 1}
        assert printer.clock.rejected == {1: {"L0-root": 1}}
        assert printer.clock.children == {1: 1}
        assert printer.status().startswith("1/")


def test_finished_examples_without_their_rounds_take_those_rounds_off_stage_a() -> None:
    clock = RunClock(_estimate())
    shape = clock.estimate.shape
    assert shape is not None and shape.rounds >= 1 and shape.example_round["optimizer"] > 0
    planned = clock.planned(0.0, "most")
    # The first example's answer scored 5 on every aspect: done after its first judgement.
    clock.call_finished(_call("judge", stage="examples"), now=10.0)
    clock.example_finished()
    skipped = clock.planned(0.0, "most")
    for role, calls in shape.example_round.items():
        assert planned[role] - skipped[role] == pytest.approx(shape.rounds * calls)
    # The second made all its rounds: their optimizer calls show it, nothing more is skipped.
    for _ in range(round(shape.rounds * shape.example_round["optimizer"])):
        clock.call_finished(_call("optimizer", stage="examples"), now=20.0)
    clock.example_finished()
    assert clock.planned(0.0, "most") == pytest.approx(skipped)


def test_the_starting_prompt_among_the_best_is_not_counted_as_one_more_finalist() -> None:
    clock = RunClock(_estimate())
    shape = clock.estimate.shape
    assert shape is not None
    planned = clock.planned(0.0, "most")
    # Ranked alone, the root is among the best 2 for want of rivals: that says nothing.
    clock.level_finished(0, 1, {"L0-root": 4.8})
    assert clock.planned(0.0, "most") == pytest.approx(planned)
    # Ranked above one of two level-1 prompts, it is among the best 2: 2 finalists, not 3.
    clock.level_finished(1, 2, {"L1-a": 4.9, "L1-b": 4.5})
    kept = clock.planned(0.0, "most")
    assert planned["base"] - kept["base"] == pytest.approx(shape.per_finalist["base"])
    # Two level-2 prompts beat it: it is re-scored as a third finalist again.
    clock.level_finished(2, 4, {"L2-a": 4.95, "L2-b": 4.97})
    assert clock.planned(0.0, "most") == pytest.approx(planned)


def test_the_forecast_before_the_run_stays_an_upper_bound_with_every_proposal_kept() -> None:
    estimate = _estimate()
    speed = ServerSpeed(20.0, 8.0)
    clock = RunClock(estimate)
    clock.measured(speed)
    kept = clock.remaining(0.0, share=0.0)
    assert kept is not None and kept > clock.remaining(0.0)  # type: ignore[operator]
    # The bound takes every reply at max_tokens and no prefix-cache hit; the live clock, before
    # any call has finished, the stored runs' fill and cache share.
    assert RunClock.before_start(estimate, speed) > kept


def test_the_first_live_eta_is_the_expected_forecast_until_a_call_finishes() -> None:
    estimate = _estimate()
    speed = ServerSpeed(20.0, 8.0)
    clock = RunClock(estimate)
    clock.measured(speed)
    expected = RunClock.expected_before_start(estimate, speed)
    assert clock.remaining(0.0) == pytest.approx(expected)
    assert expected < RunClock.before_start(estimate, speed)
    # Once a call has finished, the run's own calls decide: a base reply at its full bound
    # makes every role's calls to come longer than the stored runs' fill said.
    planned = estimate.roles["base"]
    full = _call("base", seconds=5.0).model_copy(
        update={"completion_tokens": int(planned.completion_tokens / planned.calls)}
    )
    clock.call_finished(full, 5.0)
    assert not clock._prior_for("judge")
    assert clock.remaining(5.0) != pytest.approx(expected - 5.0)
