"""Cost accounting: calls, tokens and time per role and per level, from the run store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from cli_runner import run_drpo
from scripted_llm import ScriptedLLM
from stub_server import StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.state.settings import Settings

pytestmark = pytest.mark.integration

SEARCH = {
    "width": 2,
    "actions": 2,
    "depth": 2,
    "batch_size": 1,
    "validation_size": 2,
    "finalists": 2,
}
EXAMPLES = {"enabled": True, "rounds": 1, "limit": 2}
STUB_ROLE = {
    "base": "base",
    "AspectChoice": "selector",
    "Judgement": "judge",
    "PromptProposal": "optimizer",
    "ExampleRewrite": "optimizer",
}


def served(stub: StubServer) -> Counter[str]:
    return Counter(STUB_ROLE[c.role] for c in stub.requests if c.role in STUB_ROLE)


def test_costs_per_role_and_level_add_up_to_what_the_server_saw(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(search=SEARCH, examples=EXAMPLES)
    result = optimize(settings)
    store = RunStore(settings.store)
    rows = store.cost_breakdown(result.run_id)

    by_role: Counter[str] = Counter()
    for row in rows:
        by_role[row["role"]] += row["calls"]
    assert by_role == served(stub)
    steps = {(r["stage"], r["level"]) for r in rows}
    assert steps == {
        ("examples", None),
        ("search", 0),
        ("search", 1),
        ("search", 2),
        ("validate", None),
    }
    # Level 1 expands the root once (2 actions): one optimizer call, two answers, two judgements.
    level1 = {r["role"]: r["calls"] for r in rows if r["level"] == 1}
    assert level1 == {"optimizer": 1, "base": 2, "judge": 2, "selector": 1}
    calls = store.calls(result.run_id)
    paid = [c for c in calls if c["outcome"] == "ok"]
    assert store.spent(result.run_id) == {
        "calls": len(paid),
        "tokens": sum(c["prompt_tokens"] + c["completion_tokens"] for c in paid),
    }
    assert all(r["seconds"] >= 0 and r["prompt_tokens"] > 0 for r in rows)
    store.close()


def test_cache_hits_are_never_counted_as_spent(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    # Greedy roles only, so a second identical run is answered from the shared reply cache.
    settings = make_settings(
        search={**SEARCH, "depth": 0}, examples={"enabled": False}, optimizer={"temperature": 0}
    )
    first = optimize(settings)
    before = served(stub)
    second = optimize(settings)
    assert served(stub) == before
    store = RunStore(settings.store)
    assert store.spent(second.run_id) == {"calls": 0, "tokens": 0}
    assert store.spent(first.run_id)["tokens"] > 0
    # The selector's choice is reused without a call at all; every other reply is a hit.
    hits = sum(r["cache_hits"] for r in store.cost_breakdown(second.run_id))
    assert hits == before["base"] + before["judge"] > 0
    store.close()


def test_drpo_cost_prints_tables_per_role_and_level(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(search=SEARCH, examples=EXAMPLES)
    result = optimize(settings)
    done = run_drpo("cost", result.run_id, "--store", settings.store)
    assert done.returncode == 0, done.stderr
    for label in ("per role", "per stage and level", "stage A", "level 2", "validation", "judge"):
        assert label in done.stdout
    spent = RunStore(settings.store).spent(result.run_id)
    assert f"{spent['calls']} paid calls" in done.stdout
    assert f"{spent['tokens']} tokens" in done.stdout
    unknown = run_drpo("cost", "nope", "--store", settings.store)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: no run 'nope'")
