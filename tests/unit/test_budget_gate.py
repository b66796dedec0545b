"""The budget gate decides once per superstep, so a step runs whole or not at all."""

from __future__ import annotations

from typing import Any

import pytest

from drpo.nodes import budget as budget_module
from drpo.nodes.budget import BudgetGate, BudgetReached
from drpo.state.settings import BudgetSettings


def gate(spent: dict[str, int], **limits: Any) -> BudgetGate:
    return BudgetGate(BudgetSettings(**limits), spent=lambda: spent)


def test_without_limits_the_gate_never_looks_at_the_graph() -> None:
    gate({"calls": 10**9, "tokens": 10**9}).check()  # no graph config needed, nothing raised


def test_the_first_limit_reached_is_named_with_its_flag() -> None:
    reached = gate({"calls": 5, "tokens": 900}, calls=10, tokens=900).verdict()
    assert isinstance(reached, BudgetReached)
    assert (reached.setting, reached.flag) == ("tokens", "--budget-tokens")
    assert str(reached) == "budget.tokens reached (900 tokens of 900)"
    assert gate({"calls": 9, "tokens": 0}, calls=10).verdict() is None


def test_running_time_counts_earlier_sessions() -> None:
    timed = BudgetGate(
        BudgetSettings(wall_seconds=60), spent=lambda: {"calls": 0, "tokens": 0}, active_before=61
    )
    reached = timed.verdict()
    assert reached is not None and reached.flag == "--budget-time"


def test_every_task_of_a_step_gets_the_verdict_taken_when_the_step_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spent = {"calls": 9, "tokens": 0}
    step = {"metadata": {"langgraph_step": 4}}
    monkeypatch.setattr(budget_module, "get_config", lambda: step)
    limited = gate(spent, calls=10)
    limited.check()
    spent["calls"] = 12  # other tasks of step 4 spent more: step 4 still runs whole
    limited.check()
    step["metadata"]["langgraph_step"] = 5
    with pytest.raises(BudgetReached, match="12 calls of 10"):
        limited.check()
