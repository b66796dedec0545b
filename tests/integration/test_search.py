"""The DRPO graph end to end against a scripted OpenAI-compatible server."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from scripted_llm import ROOT, ScriptedLLM
from stub_server import StubError, StubRequest, StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.state.settings import Settings

pytestmark = pytest.mark.integration

SEARCH_323 = {
    "width": 2,
    "actions": 3,
    "depth": 3,
    "batch_size": 1,
    "dedupe": True,
    "final": "last_on_best_path",
    "validation_size": 0,
}


def roles(stub: StubServer) -> Counter[str]:
    return Counter(call.role for call in stub.requests if call.role not in ("health", "models"))


def test_width2_actions3_depth3_makes_the_expected_calls_and_keeps_the_right_beams(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(search=SEARCH_323, examples={"enabled": False})
    result = optimize(settings)

    # Level 0 scores the root; levels 1-3 each: one optimizer call per beam (n=3), six answers,
    # six judgements, one new query for the selector.
    assert roles(stub) == Counter(
        {
            "PromptProposal": 2 + 2 + 1,
            "base": 1 + 3 + 6 + 6,
            "Judgement": 1 + 3 + 6 + 6,
            "AspectChoice": 4,
        }
    )
    # Scores by last action: a1=4 > a0=3 > a2=2, root 2. Best path: root → a1 → a1 → a1.
    assert result.prompt == f"{ROOT} | a1 | a1 | a1"
    assert result.train_value == pytest.approx((2 + 4 + 4 + 4) / 4)
    assert result.status == "completed"
    store = RunStore(settings.store)
    survivors = {
        row["level"]: sorted(
            r["prompt"]
            for r in store.db["candidates"].rows_where(
                "run_id = ? and level = ? and survived = 1", [result.run_id, row["level"]]
            )
        )
        for row in store.db.query("select distinct level from candidates")
    }
    assert survivors[1] == [f"{ROOT} | a0", f"{ROOT} | a1"]
    # Level 2: a1a1 (10/3) then the tie at 3.0 goes to the first beam's child a1a0.
    assert survivors[2] == [f"{ROOT} | a1 | a0", f"{ROOT} | a1 | a1"]
    assert survivors[3] == [f"{ROOT} | a1 | a1 | a0", f"{ROOT} | a1 | a1 | a1"]


def test_level_one_has_only_three_children_because_the_root_is_a_single_beam(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    result = optimize(make_settings(search={**SEARCH_323, "depth": 1}, examples={"enabled": False}))
    assert roles(stub)["PromptProposal"] == 1
    assert roles(stub)["base"] == 1 + 3
    assert result.prompt == f"{ROOT} | a1"


def test_a_new_aspect_proposed_by_the_selector_is_judged(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM(new_aspect=True))
    settings = make_settings(search={**SEARCH_323, "depth": 1}, examples={"enabled": False})
    result = optimize(settings)
    judged = RunStore(settings.store).db.query(
        "select distinct aspect from judgements where run_id = ?", [result.run_id]
    )
    assert {row["aspect"] for row in judged} == {"Helpfulness", "Clarity", "Humor"}
    schemas = [c.body["response_format"]["json_schema"]["schema"] for c in stub.calls("Judgement")]
    assert all("Humor" in s["$defs"]["AspectScores"]["properties"] for s in schemas)


def test_a_judge_that_returns_garbage_leaves_that_candidate_unscored(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM(garbage_for="| a2"))
    settings = make_settings(search={**SEARCH_323, "depth": 2}, examples={"enabled": False})
    result = optimize(settings)
    assert result.status == "completed"
    store = RunStore(settings.store)
    unscored = list(
        store.db["candidates"].rows_where(
            "run_id = ? and prompt like '%| a2' and level = 1", [result.run_id]
        )
    )
    assert len(unscored) == 1 and unscored[0]["level_reward"] is None
    assert unscored[0]["survived"] == 0
    errors = list(
        store.db["judgements"].rows_where("run_id = ? and error is not null", [result.run_id])
    )
    assert errors and all(row["score"] is None for row in errors)
    # Never a zero: no judgement row has score 0.
    assert not list(store.db["judgements"].rows_where("score = 0"))


def test_paper_preset_reproduces_the_released_schedule(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    # a1 scores 5: the skip rule carries such prompts forward and extends the depth budget.
    stub.set_responder(ScriptedLLM(scores={"root": 2, "a0": 3, "a1": 5, "a2": 2}))
    settings = make_settings(preset="paper", examples={"enabled": False})
    assert (settings.search.width, settings.search.actions, settings.search.depth) == (2, 3, 20)
    result = optimize(settings)
    calls = roles(stub)
    levels = result.levels
    # Every beam whose prompt ends in a1 scored 5 > 4.5 and is carried without an optimizer call,
    # so each level extends the budget by one, up to +10: 30 levels in all.
    assert levels == 30
    # Level 1: the root (2) is expanded: 3 children. From level 2 on the beam is {a1 (5), a0 (3)}
    # then {a1, a1-carried...}: count optimizer calls = levels whose beam had a prompt <= 4.5.
    assert calls["base"] == calls["Judgement"]
    assert result.prompt.endswith("| a1")
    # One query per level: the selector is asked at most once per level.
    assert calls["AspectChoice"] <= levels + 1


def test_an_optimizer_that_always_fails_carries_the_beam_without_extending_the_depth(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    # The skip rule's extension is for prompts too good to rewrite, not for a failing optimizer:
    # otherwise every failed rewrite would buy the run another level, up to max_extension.
    stub.set_responder(ScriptedLLM(optimizer_fails=True))
    search = {**SEARCH_323, "depth": 2, "skip_threshold": 4.5, "max_extension": 10}
    result = optimize(make_settings(search=search, examples={"enabled": False}))
    assert result.status == "completed"
    assert result.levels == 2
    assert result.prompt == ROOT
    assert roles(stub)["PromptProposal"] > 0


class SlowAnswer(ScriptedLLM):
    """One base answer takes a second; every call's start and end times are kept."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.spans: list[tuple[str, str, float, float]] = []

    def __call__(self, request: StubRequest) -> str | StubError:
        started = time.monotonic()
        if request.role == "base" and request.text_of("system").split("\n\n")[0].endswith(
            self.slow
        ):
            time.sleep(1.0)
        reply = super().__call__(request)
        self.spans.append((request.role, request.prompt_text, started, time.monotonic()))
        return reply


def test_a_judgement_starts_as_soon_as_its_own_answer_exists(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    responder = SlowAnswer(slow="| a0")
    stub.set_responder(responder)
    optimize(make_settings(search={**SEARCH_323, "depth": 1}, examples={"enabled": False}))
    spans = responder.spans
    (slow_end,) = [end for role, text, _, end in spans if role == "base" and "| a0" in text]
    # The level's other two children were judged while a0's answer was still being written:
    # no step waits for the slowest answer of the level before judging the others.
    early = [
        start
        for role, text, start, _ in spans
        if role == "Judgement" and ("| a1" in text or "| a2" in text)
    ]
    assert len(early) == 2 and max(early) < slow_end - 0.5


def test_aspect_choices_are_made_in_slots_an_earlier_step_leaves_idle(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    stub.latency = 0.05
    settings = make_settings(
        search={**SEARCH_323, "validation_size": 2, "final": "best_validated"},
        examples={"rounds": 1, "limit": 2},
    )
    result = optimize(settings)
    calls = [c for c in RunStore(settings.store).calls(result.run_id) if c["outcome"] == "ok"]

    def ends(role: str, stage: str, level: int | None = None) -> list[float]:
        return [
            c["started_at"] + c["latency"]
            for c in calls
            if c["role"] == role and c["stage"] == stage and (level is None or c["level"] == level)
        ]

    def starts(role: str, stage: str, level: int | None = None) -> list[float]:
        return [
            c["started_at"]
            for c in calls
            if c["role"] == role and c["stage"] == stage and (level is None or c["level"] == level)
        ]

    # The root level's and the validation round's choices are made during stage A ...
    stage_a_end = max(c["started_at"] + c["latency"] for c in calls if c["stage"] == "examples")
    early = starts("selector", "search", 0) + starts("selector", "validate")
    assert len(early) == 1 + 2 and max(early) < stage_a_end
    # ... and each later level's while the level before it is scored, so they are done before
    # that level's rewrites start (made in the same step, they would overlap them).
    for level in (1, 2, 3):
        assert ends("selector", "search", level), level
        assert max(ends("selector", "search", level)) <= min(starts("optimizer", "search", level))
    # Made early, still made once each: 4 training queries and 2 validation queries.
    assert sum(c["role"] == "selector" and c["stage"] != "examples" for c in calls) == 4 + 2
