"""Exact match for short-answer QA: the answer, normalised, must equal the reference.

Normalising forgives case, surrounding whitespace, quotes, backticks, bold markers and a final
full stop, nothing else: "Tokyo." matches "Tokyo", "The capital is Tokyo." does not.
"""

from __future__ import annotations

import re

from drpo.nodes.metric import MetricResult

_WRAPPING = re.compile(r"^[\s`'\"*]+|[\s`'\"*.!]+$")


def normalise(text: str) -> str:
    """Lower-case, single-spaced, without wrapping quotes, markdown or a final stop."""
    return " ".join(_WRAPPING.sub("", text).lower().split())


def exact_match(query: str, answer: str, reference: str | None) -> MetricResult:
    """1 when the normalised answer equals the normalised reference, else 0 with why."""
    if reference is None:
        raise ValueError("exact match needs a reference answer")
    if normalise(answer) == normalise(reference):
        return MetricResult(score=1.0, reason="exact match")
    shown = answer if len(answer) <= 80 else answer[:77] + "..."
    return MetricResult(
        score=0.0, reason=f"expected exactly {reference!r} and nothing else, got {shown!r}"
    )
