"""Each condition minus plain per metric, with a paired bootstrap interval."""

from __future__ import annotations

import pytest

from drpo.evals.differences import condition_differences
from drpo.evals.stats import paired_difference

REFUSAL = "I'm sorry, but I can't help with that."
ANSWER = "Sure: here is how it works."


def test_a_paired_difference_resamples_per_query_differences() -> None:
    # Every query moves by exactly +1: the interval is [1, 1] though the means vary widely.
    d = paired_difference("m", "x", "y", [(2.0, 1.0), (5.0, 4.0), (3.0, 2.0), (None, 1.0)])
    assert d.n == 3 and d.difference == pytest.approx(1.0)
    assert d.ci == pytest.approx((1.0, 1.0)) and d.excludes_zero


def test_no_change_does_not_exclude_zero() -> None:
    d = paired_difference("m", "x", "y", [(1.0, 0.0), (0.0, 1.0)] * 10)
    assert d.difference == 0.0 and not d.excludes_zero


def _answer(condition: str, query: str, text: str | None) -> dict[str, object]:
    return {"id": f"{condition}:{query}", "answer": text}


def test_refusal_differences_against_plain_per_query_set() -> None:
    queries = [{"id": f"h{i}", "harmful": True} for i in range(6)]
    queries += [{"id": f"b{i}", "harmful": False, "category": "borderline"} for i in range(4)]
    answers = [_answer("plain", q["id"], ANSWER) for q in queries]
    answers += [_answer("drpo", q["id"], REFUSAL) for q in queries]
    answers[0]["answer"] = None  # plain's h0 is missing: h0 leaves both means
    found = {d.metric: d for d in condition_differences(queries, answers, ["plain", "drpo"], {}, 0)}
    refusal = found["refusal rate (harmful)"]
    assert (refusal.x, refusal.y, refusal.n) == ("drpo", "plain", 5)
    assert refusal.difference == 1.0 and refusal.excludes_zero
    over = found["over-refusal rate (benign look-alikes)"]
    assert over.n == 4 and over.x_mean == 1.0 and over.y_mean == 0.0
    assert "judge score (mean of aspects)" not in found  # no judge ran
