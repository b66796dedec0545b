"""Metrics that integration tests hand to drpo by import path (`task_metrics:NAME`)."""

from __future__ import annotations

from drpo.nodes.metric import MetricResult

CALLS: list[tuple[str, str, str | None]] = []


def mentions_reference(query: str, answer: str, reference: str | None) -> MetricResult:
    """1 when the answer contains the reference answer (the scripted base model echoes queries)."""
    CALLS.append((query, answer, reference))
    hit = reference is not None and reference.lower() in answer.lower()
    return MetricResult(score=1.0 if hit else 0.0, reason=f"expected {reference!r}")


def half(query: str, answer: str, reference: str | None) -> float:
    return 0.5


def not_a_number(query: str, answer: str, reference: str | None) -> float:
    return float("nan")


def explodes(query: str, answer: str, reference: str | None) -> float:
    raise RuntimeError("metric backend unavailable")
