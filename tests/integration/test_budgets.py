"""Budgets: a run pauses cleanly at a step boundary and resumes with a larger budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_drpo
from run_results import comparable_result
from scripted_llm import ScriptedLLM
from stub_server import StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import RunPaused, optimize, resume
from drpo.state.settings import ConfigError, Settings

pytestmark = pytest.mark.integration

SCHEDULE: dict[str, Any] = {
    "search": {"width": 2, "actions": 2, "depth": 2, "batch_size": 1, "validation_size": 2},
    "examples": {"rounds": 1, "limit": 2},
}


def model_requests(stub: StubServer) -> int:
    return sum(c.role not in ("models", "health") for c in stub.requests)


def paid(store_path: Path, run_id: str) -> list[str]:
    store = RunStore(store_path)
    try:
        return [c["cache_key"] for c in store.calls(run_id) if c["outcome"] == "ok"]
    finally:
        store.close()


@pytest.fixture
def reference(run_reference: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    return run_reference(SCHEDULE)


@pytest.mark.parametrize(
    ("budget", "larger"),
    [
        ({"calls": 12}, {"calls": 1000}),
        ({"tokens": 4000}, {"tokens": 10**7}),
        ({"wall_seconds": 0.001}, {"wall_seconds": 3600}),
    ],
)
def test_a_budget_pauses_the_run_and_a_larger_one_finishes_it_without_reissuing_calls(
    budget: dict[str, Any],
    larger: dict[str, Any],
    reference: dict[str, Any],
    stub: StubServer,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**SCHEDULE, budget=budget)
    with pytest.raises(RunPaused) as paused:
        optimize(settings)
    run_id = paused.value.run_id
    (setting,) = budget
    assert str(paused.value).startswith(f"run {run_id} paused: budget.{setting} reached (")
    flag = {"calls": "--budget-calls", "tokens": "--budget-tokens"}.get(setting, "--budget-time")
    assert f"(resume with: drpo resume {run_id} {flag} " in str(paused.value)
    store = RunStore(settings.store)
    row = store.run(run_id)
    spent = store.spent(run_id)
    store.close()
    assert row is not None and row["status"] == "paused"
    # Stopped between steps: every request the server saw is a recorded, paid call.
    assert model_requests(stub) == spent["calls"] < reference["calls"]
    if setting != "wall_seconds":
        assert spent[setting] >= budget[setting]

    with pytest.raises(ConfigError, match="already used up"):
        resume(run_id, store_path=settings.store, budget=budget)

    result = resume(run_id, store_path=settings.store, budget=larger)
    assert result.status == "completed"
    keys = paid(settings.store, run_id)
    assert len(keys) == len(set(keys)) == reference["calls"]  # no call paid twice
    assert model_requests(stub) == reference["calls"]
    assert comparable_result(settings.store, run_id) == reference["result"]


def test_the_cli_pauses_with_exit_code_3_and_says_how_to_continue(
    stub: StubServer, tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    store = str(tmp_path / "runs.db")
    args = [
        *("--endpoint", stub.base_url, "--model", "stub-model", "--store", store),
        *("--checkpoints", str(tmp_path / "ck.db"), "--depth", "1", "--skip-examples"),
        *("--set", "data.retrieval=bm25", "--set", "search.validation_size=0"),
    ]
    done = run_drpo("optimize", *args, "--budget-calls", "2")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "paused" in line]
    run_id = RunStore(Path(store)).runs()[0]["id"]
    # select_rewards, then generate: the judge's step may not start.
    assert line == (
        f"run {run_id} paused: budget.calls reached (2 calls of 2) "
        f"(resume with: drpo resume {run_id} --budget-calls 4)"
    )
    bad = run_drpo("optimize", *args, "--budget-time", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --budget-time expects")
    resumed = run_drpo("resume", run_id, "--store", store, "--budget-calls", "100")
    assert resumed.returncode == 0, resumed.stderr
    assert "this level:" in resumed.stderr
