"""Pairwise preference probabilities: read at the verdict token, reconciled over both orders."""

from __future__ import annotations

import math
from typing import Any

import pytest

from drpo.backends.llm import ScoredReply
from drpo.evals.harness import first_preferred
from drpo.evals.summary import reconcile_chances
from drpo.evals.templates import PairVerdict


def _reply(verdict: str, value_tokens: list[dict[str, Any]] | None) -> ScoredReply[PairVerdict]:
    """`{"rationale": "r", "verdict": "<value>"}` with the value's tokens as given."""
    if value_tokens is None:
        return ScoredReply(PairVerdict(rationale="r", verdict=verdict), None)  # type: ignore[arg-type]
    head = [{"token": '{"rationale": "r", "verdict":', "logprob": 0.0, "top_logprobs": []}]
    tail = [{"token": '"}', "logprob": 0.0, "top_logprobs": []}]
    parsed = PairVerdict(rationale="r", verdict=verdict)  # type: ignore[arg-type]
    return ScoredReply(parsed, head + value_tokens + tail)


def _token(text: str, tops: dict[str, float]) -> dict[str, Any]:
    return {
        "token": text,
        "logprob": math.log(tops[text]),
        "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in tops.items()],
    }


def test_preference_of_the_first_answer_counts_half_a_tie() -> None:
    # The opening quote shares the token with the value (' "A'), as byte-level BPE often does.
    reply = _reply("A", [_token(' "A', {' "A': 0.6, ' "B': 0.2, ' "t': 0.2})])
    assert first_preferred(reply) == pytest.approx(0.6 + 0.1)


def test_quote_as_its_own_token_and_missing_alternatives() -> None:
    value = [{"token": ' "', "logprob": 0.0, "top_logprobs": []}, _token("B", {"B": 0.8})]
    assert first_preferred(_reply("B", value)) == pytest.approx(0.0)
    value = [
        {"token": ' "', "logprob": 0.0, "top_logprobs": []},
        _token("B", {"B": 0.5, "A": 0.25, "The": 0.25}),  # "The" is no verdict: left out
    ]
    assert first_preferred(_reply("B", value)) == pytest.approx(1 / 3)


def test_no_or_mismatched_logprobs_give_none() -> None:
    assert first_preferred(_reply("A", None)) is None
    mismatched = _reply("tie", [_token(' "A', {' "A': 0.9, ' "B': 0.1})])
    assert first_preferred(mismatched) is None


def test_both_orders_average_out_a_first_position_preference() -> None:
    # X shown first: 0.9 for the first answer; X shown second: 0.7 for the first (Y). The judge
    # leans to the first position; averaging leaves X's own edge: (0.9 + 0.3) / 2.
    assert reconcile_chances({"xy": 0.9, "yx": 0.7}) == pytest.approx(0.6)
    assert reconcile_chances({"xy": 0.9}) is None
