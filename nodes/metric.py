"""A programmatic metric: the user's `fn(query, answer, reference)` scoring answers in [0, 1].

The metric joins the judge's aspects with its own weight (or replaces them when
`rewards.llm_aspects` is false). Its reason reaches the optimizer like a judge's rationale. A
metric that raises, or returns NaN, a value outside [0, 1] or something that is not a score, gives
a *missing* score with the error recorded: the run goes on, and the answer's reward leaves the
metric out (never a 0).

A run stores the metric's import path (`module:function`) with its settings, so a resumed run
imports it again; a Python callable without an import path must be handed to `resume` again.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from drpo.state.settings import METRIC_PATH, ConfigError
from drpo.state.types import MetricScore

Metric = Callable[[str, str, str | None], Any]
REASON_MAX_CHARS = 300


class MetricResult(BaseModel):
    """What a metric may return instead of a bare float: the score and why."""

    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    reason: str = ""


def import_metric(path: str) -> Metric:
    """Import `module:function`; a path that does not lead to a callable is a ConfigError."""
    if not METRIC_PATH.fullmatch(path):
        raise ConfigError(f"metric {path!r} must be 'module:function'")
    module_name, _, attribute = path.partition(":")
    # Like `python -m`: a metric module next to the user's data is found from where drpo runs
    # (the `drpo` script's own directory is what sys.path starts with otherwise).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"metric {path!r} cannot be imported: {_one_line(exc)}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"metric {path!r}: module {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ConfigError(f"metric {path!r} is not callable")
    return target  # type: ignore[no-any-return]


def import_path_of(metric: Metric) -> str | None:
    """The `module:function` that imports this very callable again, or None if there is none."""
    module = getattr(metric, "__module__", None)
    name = getattr(metric, "__qualname__", None)
    if not module or not name or module == "__main__" or "<" in name:
        return None
    path = f"{module}:{name}"
    try:
        return path if import_metric(path) is metric else None
    except ConfigError:
        return None


def metric_name(metric: Metric) -> str:
    """The name a metric is shown and stored under."""
    return getattr(metric, "__qualname__", None) or type(metric).__name__


async def score_answer(
    metric: Metric, weight: float, query: str, answer: str, reference: str | None
) -> MetricScore:
    """Run the metric on one answer; every failure is a missing score with its error."""
    name = metric_name(metric)
    try:
        if inspect.iscoroutinefunction(metric):
            value = await metric(query, answer, reference)
        else:
            # A thread, so a slow metric (a test suite, a parser) does not stall the model calls.
            value = await asyncio.to_thread(metric, query, answer, reference)
        score, reason = _read(value)
    except Exception as exc:
        return MetricScore(
            name=name, weight=weight, error=f"metric {name} failed: {_one_line(exc)}"
        )
    return MetricScore(name=name, weight=weight, score=score, reason=reason[:REASON_MAX_CHARS])


def _read(value: Any) -> tuple[float, str]:
    if isinstance(value, bool):
        raise TypeError("returned a bool; return a float in [0, 1]")
    if isinstance(value, int | float):
        score, reason = float(value), ""
    elif hasattr(value, "score"):
        score, reason = value.score, str(getattr(value, "reason", "") or "")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError(f"returned a score of type {type(score).__name__}")
        score = float(score)
    else:
        raise TypeError(f"returned {type(value).__name__}; return a float in [0, 1]")
    if math.isnan(score):
        raise ValueError("returned NaN")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"returned {score:g}, outside [0, 1]")
    return score, reason


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
