"""Programmatic metrics: what counts as a score, failures as missing scores, weighted rewards."""

from __future__ import annotations

import math
from typing import Any

import pytest

from drpo.nodes.judging import all_perfect, critique_text
from drpo.nodes.metric import MetricResult, import_metric, import_path_of, score_answer
from drpo.state.settings import ConfigError
from drpo.state.types import AspectScore, Judgement, MetricScore


def _const(value: Any) -> Any:
    def metric(query: str, answer: str, reference: str | None) -> Any:
        return value

    return metric


async def test_a_float_or_a_result_with_a_reason_is_a_score() -> None:
    plain = await score_answer(_const(0.25), 2.0, "q", "a", "r")
    reasoned = await score_answer(
        _const(MetricResult(score=1, reason="exact")), 1.0, "q", "a", None
    )
    assert (plain.score, plain.weight, plain.error) == (0.25, 2.0, None)
    assert (reasoned.score, reasoned.reason) == (1.0, "exact")


async def test_an_async_metric_is_awaited() -> None:
    async def metric(query: str, answer: str, reference: str | None) -> float:
        return 0.75 if reference == "r" else 0.0

    assert (await score_answer(metric, 1.0, "q", "a", "r")).score == 0.75


def _raises(query: str, answer: str, reference: str | None) -> float:
    raise KeyError("field")


@pytest.mark.parametrize(
    ("metric", "error"),
    [
        (_const(math.nan), "returned NaN"),
        (_const(1.5), "returned 1.5, outside [0, 1]"),
        (_const(-0.1), "outside [0, 1]"),
        (_const(True), "returned a bool"),
        (_const("0.5"), "returned str"),
        (_const(MetricResult.model_construct(score=math.nan, reason="")), "returned NaN"),
        (_raises, "KeyError: 'field'"),
    ],
)
async def test_a_failing_metric_is_a_missing_score_with_its_error(metric: Any, error: str) -> None:
    scored = await score_answer(metric, 1.0, "q", "a", None)
    assert scored.score is None
    assert scored.error is not None and error in scored.error


def test_the_reward_is_the_weighted_mean_with_the_metric_on_the_1_to_5_scale() -> None:
    scores = (AspectScore(aspect="A", score=5, weight=3), AspectScore(aspect="B", score=1))
    metric = MetricScore(name="m", score=0.5, weight=2)  # 0.5 → 3 on the 1–5 scale
    assert Judgement(scores=scores).reward == pytest.approx((15 + 1) / 4)
    assert Judgement(scores=scores, metric=metric).reward == pytest.approx((15 + 1 + 6) / 6)
    missing = MetricScore(name="m", error="boom")
    assert Judgement(scores=scores, metric=missing).reward == pytest.approx(4.0)
    assert Judgement(metric=metric).reward == pytest.approx(3.0)
    assert Judgement(metric=missing).reward is None


def test_the_metric_reason_reaches_the_optimizer_and_counts_for_perfection() -> None:
    metric = MetricScore(name="exact", score=0.0, reason="expected 'Paris'")
    judged = Judgement(scores=(AspectScore(aspect="A", score=5, rationale="fine"),), metric=metric)
    assert "- Metric exact: 0.00 of 1. expected 'Paris'" in critique_text(judged)
    assert not all_perfect(judged)
    perfect = judged.model_copy(update={"metric": metric.model_copy(update={"score": 1.0})})
    assert all_perfect(perfect)
    assert critique_text(Judgement(metric=metric)).startswith("- Metric exact")


def test_import_paths_round_trip_and_bad_paths_are_one_line() -> None:
    assert import_metric("math:isclose") is math.isclose
    assert import_path_of(import_metric("json:dumps")) == "json:dumps"
    assert import_path_of(_const(1.0)) is None  # a closure has no import path
    for path, message in [
        ("no_such_module_xyz:f", "cannot be imported: ModuleNotFoundError"),
        ("math:nope", "module 'math' has no 'nope'"),
        ("math:pi", "is not callable"),
        ("math.isclose", "must be 'module:function'"),
    ]:
        with pytest.raises(ConfigError, match=message) as caught:
            import_metric(path)
        assert "\n" not in str(caught.value)
