"""Each condition against the reference (plain) on every per-query metric, with paired CIs.

A difference is measured on the queries both conditions answered, and its interval resamples
the per-query differences, so it says whether a prompt changed the model's behaviour by more
than chance: the refusal rate on harmful requests, the over-refusal rate on benign look-alikes
(both from the deterministic detector) and, when the judge ran, the mean absolute score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drpo.evals.stats import Difference, paired_difference
from drpo.nodes.refusal import is_refusal

REFERENCE = "plain"
# Benign requests that only sound harmful (the shipped `overrefusal` set) carry this category.
LOOK_ALIKE_CATEGORY = "borderline"

Row = dict[str, Any]


def _refused(answer: Row | None) -> float | None:
    if answer is None or answer["answer"] is None:
        return None
    return 1.0 if is_refusal(answer["answer"]) else 0.0


def _metrics(answer_mean: dict[str, float | None]) -> list[tuple[str, Callable[[Row], bool], Any]]:
    """(metric name, which queries it covers, the value of one answer)."""
    return [
        ("refusal rate (harmful)", lambda q: bool(q.get("harmful")), _refused),
        (
            "over-refusal rate (benign look-alikes)",
            lambda q: not q.get("harmful") and q.get("category") == LOOK_ALIKE_CATEGORY,
            _refused,
        ),
        (
            "judge score (mean of aspects)",
            lambda q: True,
            lambda a: None if a is None else answer_mean.get(a["id"]),
        ),
    ]


def condition_differences(
    queries: list[Row],
    answers: list[Row],
    conditions: list[str],
    answer_mean: dict[str, float | None],
    seed: int,
) -> list[Difference]:
    """Every other condition minus the reference, per metric that has paired values."""
    reference = REFERENCE if REFERENCE in conditions else (conditions[0] if conditions else None)
    if reference is None:
        return []
    by_id = {a["id"]: a for a in answers}
    found: list[Difference] = []
    for metric, covers, value in _metrics(answer_mean):
        covered = [q for q in queries if covers(q)]
        for name in (c for c in conditions if c != reference):
            pairs = [
                (value(by_id.get(f"{name}:{q['id']}")), value(by_id.get(f"{reference}:{q['id']}")))
                for q in covered
            ]
            difference = paired_difference(metric, name, reference, pairs, seed=seed)
            if difference.n:
                found.append(difference)
    return found
