"""The typed run events: `astream_optimize`, `optimize(on_event=...)`, and what they report."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scripted_llm import ScriptedLLM, between
from stub_server import StubError, StubRequest, StubServer

from drpo.checkpoints.store import RunStore
from drpo.cli.progress import ProgressPrinter, stored_call
from drpo.graph.api import RunPaused, astream_optimize, load_run_data, optimize
from drpo.nodes.estimate import estimate_run
from drpo.nodes.eta import RunClock
from drpo.state.events import (
    RUN_EVENT,
    CallFinished,
    CallStarted,
    LevelDone,
    ProposalRejected,
    ReviewNeeded,
    RunEvent,
    RunFinished,
    RunStarted,
    StepFinished,
)
from drpo.state.settings import Settings

pytestmark = pytest.mark.integration

SCHEDULE: dict[str, Any] = {
    "search": {"width": 2, "actions": 2, "depth": 2, "batch_size": 2, "validation_size": 2},
    "examples": {"rounds": 1, "limit": 1},
    "max_concurrency": 4,
}


def stored_calls(settings: Settings, run_id: str) -> list[CallFinished]:
    store = RunStore(settings.store)
    try:
        return [stored_call(row) for row in store.calls(run_id)]
    finally:
        store.close()


async def collect(settings: Settings) -> list[RunEvent]:
    return [event async for event in astream_optimize(settings)]


def test_the_stream_reports_the_run_its_calls_and_its_levels_in_order(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(**SCHEDULE)
    events = asyncio.run(collect(settings))
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    result = events[-1].result
    calls = [e for e in events if isinstance(e, CallFinished)]
    store = RunStore(settings.store)
    try:
        rows = store.calls(result.run_id)
    finally:
        store.close()
    # One event per recorded call, with the recorded cost.
    assert len(calls) == len(rows) > 0
    assert sum(c.prompt_tokens for c in calls) == sum(r["prompt_tokens"] for r in rows)
    assert {c.role for c in calls} == {"selector", "optimizer", "base", "judge"}
    assert all(c.seconds > 0 for c in calls if c.outcome == "ok")
    # Every request sent is announced before it ends, so the ETA can count calls in flight.
    starts = [i for i, e in enumerate(events) if isinstance(e, CallStarted)]
    paid = [i for i, e in enumerate(events) if isinstance(e, CallFinished) and e.outcome == "ok"]
    assert len(starts) == len(paid) and all(s < p for s, p in zip(starts, paid, strict=True))
    levels = [e for e in events if isinstance(e, LevelDone)]
    assert [e.level for e in levels] == list(range(settings.search.depth + 1))
    assert levels[-1].beam and all(e.candidate_id.startswith("L") for e in levels[-1].beam)
    assert any(isinstance(e, StepFinished) and e.node == "prepare" for e in events)
    # Events round-trip through JSON, so a caller can log and reload them.
    assert all(RUN_EVENT.validate_json(e.model_dump_json()) == e for e in events)


def test_optimize_on_event_gets_the_same_events_as_the_stream(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    streamed = asyncio.run(collect(make_settings(**SCHEDULE)))
    stub.set_responder(ScriptedLLM())
    received: list[RunEvent] = []
    optimize(make_settings(**SCHEDULE, store=str(tmp_path / "b.db")), on_event=received.append)

    def census(events: list[RunEvent]) -> Counter[str]:
        # Calls in flight together finish in any order, so the kinds are compared as counts.
        return Counter(e.node if isinstance(e, StepFinished) else e.kind for e in events)

    assert census(received) == census(streamed)
    assert type(received[0]) is RunStarted and type(received[-1]) is RunFinished


def test_a_run_waiting_for_review_ends_the_stream_with_its_question(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(**SCHEDULE, review={"policy": "every"})
    events = asyncio.run(collect(settings))
    last = events[-1]
    assert isinstance(last, ReviewNeeded) and last.request is not None
    assert last.request.candidate_id.startswith("L")
    assert not any(isinstance(e, RunFinished) for e in events)


def test_a_resumed_runs_progress_counts_the_calls_already_done_against_its_estimate(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(**SCHEDULE, budget={"calls": 6})
    with pytest.raises(RunPaused) as paused:
        optimize(settings)
    printer = ProgressPrinter.for_stored_run(settings.store, paused.value.run_id)
    assert printer.clock is not None
    assert printer.clock.calls_done >= 6  # the budget is checked per step, so it can go over
    # The stored calls' rates give an ETA before the resumed run's first call finishes, and
    # the calls its interrupted tasks re-read from the reply cache are not counted again.
    assert printer.clock.remaining(0.0) is not None
    done = printer.clock.calls_done
    hit = next(c for c in stored_calls(settings, paused.value.run_id) if c.outcome == "ok")
    printer.clock.call_finished(hit.model_copy(update={"outcome": "cache_hit"}), now=1.0)
    assert printer.clock.calls_done == done
    assert printer.clock.estimate.calls == estimate_run(settings, load_run_data(settings)).calls
    missing = ProgressPrinter.for_stored_run(tmp_path / "nowhere.db", "r1")
    assert missing.clock is None and not (tmp_path / "nowhere.db").exists()


class RefusingSecondProposal(ScriptedLLM):
    """The optimizer's second proposal makes the prompt itself refuse: the rules reject it."""

    def __call__(self, request: StubRequest) -> str | StubError:
        if request.role == "PromptProposal" and request.choice_index == 1:
            current = between(request.text_of("user"), "prompt")
            refusing = f"{current} I am sorry, but I cannot assist with that request."
            return json.dumps({"analysis": "scripted", "prompt": refusing})
        return super().__call__(request)


def test_a_rejected_proposal_reaches_the_eta_as_an_event_and_leaves_its_calls_out(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(RefusingSecondProposal())
    settings = make_settings(**SCHEDULE)
    estimate = estimate_run(settings, load_run_data(settings))
    events = asyncio.run(collect(settings))
    rejected = [e for e in events if isinstance(e, ProposalRejected)]
    assert rejected and all(e.level >= 1 and e.parent_id.startswith("L") for e in rejected)
    assert all("refuses" in e.reason for e in rejected)
    clock = RunClock(estimate)
    for event in events:
        if isinstance(event, CallFinished):
            clock.call_finished(event, now=0.0)
        elif isinstance(event, ProposalRejected):
            clock.proposal_rejected(event.level, event.parent_id)
        elif isinstance(event, LevelDone):
            clock.level_finished(event.level, event.children)
    # Every level's rewrites lost half their proposals, so the run made fewer calls than the
    # estimate's maximum, and the clock, told what happened, no longer waits for the rest.
    made = clock.calls_done
    assert made < estimate.calls, (made, estimate.calls)
    assert clock.calls_expected == made
