"""Budgets: pause a run before a step once its paid calls, tokens or running time reach a limit.

The check happens when a model-calling task starts, and is decided once per superstep: every
task of a step sees the same verdict, so either the whole step runs or none of it does. A run
therefore stops at a step boundary with no call in flight, and resuming it with a larger budget
re-issues nothing. A step that starts under the budget runs to its end, so a run can go over by
up to one step's calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from langgraph.config import get_config

from drpo.state.settings import BudgetSettings

# setting name → (what it counts, the flag that raises it)
LIMITS = {
    "calls": ("calls", "--budget-calls"),
    "tokens": ("tokens", "--budget-tokens"),
    "wall_seconds": ("seconds running", "--budget-time"),
}


class BudgetReached(RuntimeError):
    """A budget is used up; the run pauses and can resume with a larger one."""

    def __init__(self, setting: str, limit: float, spent: float) -> None:
        unit, flag = LIMITS[setting]
        shown = f"{spent:.0f} {unit} of {limit:g}"
        super().__init__(f"budget.{setting} reached ({shown})")
        self.setting = setting
        self.limit = limit
        self.spent = spent
        self.flag = flag


@dataclass
class Spending:
    """What the run has spent: paid calls, tokens and active seconds."""

    calls: int
    tokens: int
    seconds: float


@dataclass
class BudgetGate:
    """Decides, once per superstep, whether the run may start the step."""

    budget: BudgetSettings
    spent: Callable[[], dict[str, int]]
    active_before: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _verdicts: dict[object, BudgetReached | None] = field(default_factory=dict)

    def spending(self) -> Spending:
        """What the run has spent so far, its earlier sessions included."""
        paid = self.spent()
        seconds = self.active_before + time.monotonic() - self.started
        return Spending(calls=paid["calls"], tokens=paid["tokens"], seconds=seconds)

    @property
    def unlimited(self) -> bool:
        """Whether no budget limit is set."""
        budget = self.budget
        return budget.calls is None and budget.tokens is None and budget.wall_seconds is None

    @property
    def limits_spending(self) -> bool:
        """Whether a call or token limit is set (a time limit alone does not count)."""
        return self.budget.calls is not None or self.budget.tokens is not None

    def verdict(self) -> BudgetReached | None:
        """The limit the run has reached, or None while it may go on."""
        budget = self.budget
        now = self.spending()
        for setting, limit, spent in (
            ("calls", budget.calls, now.calls),
            ("tokens", budget.tokens, now.tokens),
            ("wall_seconds", budget.wall_seconds, now.seconds),
        ):
            if limit is not None and spent >= limit:
                return BudgetReached(setting, limit, spent)
        return None

    def check(self) -> None:
        """Raise BudgetReached if this step must not start."""
        if self.unlimited:
            return
        step = get_config().get("metadata", {}).get("langgraph_step")
        if step not in self._verdicts:
            self._verdicts[step] = self.verdict()
        reached = self._verdicts[step]
        if reached is not None:
            # A fresh exception per task: one instance raised from several tasks would share
            # (and keep extending) a traceback.
            raise BudgetReached(reached.setting, reached.limit, reached.spent)
