"""Probability-weighted judge scores computed from token logprob payloads."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from drpo.backends.llm import RoleClient
from drpo.backends.logprobs import LogprobError, expected_digit, field_value_offset, reply_bytes
from drpo.checkpoints.store import RunStore
from drpo.nodes.judging import expected_scores, score_answer
from drpo.state.types import Aspect, AspectScore, Judgement
from tests.support.stub_clients import stub_judge
from tests.support.stub_server import StubRequest, StubServer


def _alt(token: str, p: float) -> dict[str, Any]:
    return {"token": token, "logprob": math.log(p)}


def _entry(token: str, p: float, tops: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"token": token, "logprob": math.log(p)}
    if tops is not None:
        entry["top_logprobs"] = tops
    return entry


def _one_digit(entry: dict[str, Any]) -> float:
    content = [_entry('{"score": ', 1.0, []), entry, _entry("}", 1.0, [])]
    _, spans = reply_bytes(content)
    return expected_digit(content, spans, len('{"score": '), range(1, 6))


def test_expected_value_over_the_digits() -> None:
    tops = [_alt("4", 0.6), _alt("5", 0.3), _alt("3", 0.1)]
    assert _one_digit(_entry("4", 0.6, tops)) == pytest.approx(4.2)


def test_spaced_and_bare_digit_tokens_are_merged() -> None:
    # " 4" and "4" are two tokenisations of the same score.
    tops = [_alt(" 4", 0.4), _alt("4", 0.2), _alt(" 2", 0.4)]
    assert _one_digit(_entry(" 4", 0.4, tops)) == pytest.approx((4 * 0.6 + 2 * 0.4) / 1.0)


def test_top_logprobs_missing_the_other_digits_renormalise_over_those_found() -> None:
    # Non-digit alternatives ('"', "\n") and digits outside 1–5 ("0") are not scores.
    tops = [_alt("5", 0.5), _alt('"', 0.3), _alt("0", 0.1), _alt("3", 0.1)]
    assert _one_digit(_entry("5", 0.5, tops)) == pytest.approx((5 * 0.5 + 3 * 0.1) / 0.6)


def test_chosen_token_absent_from_its_alternatives_still_counts() -> None:
    tops = [_alt("2", 0.25)]
    assert _one_digit(_entry("3", 0.75, tops)) == pytest.approx((3 * 0.75 + 2 * 0.25) / 1.0)


@pytest.mark.parametrize(
    "entry",
    [
        _entry("4", 0.5),  # no top_logprobs at all
        _entry("4", 0.5, []),  # an empty list
        _entry("4,", 0.5, [_alt("4,", 0.5)]),  # the digit is not a token of its own
        {"token": "4", "logprob": float("nan"), "top_logprobs": [{"token": "4"}]},
        {"token": "4", "logprob": -0.1, "top_logprobs": ["4"]},
        {"logprob": -0.1},
    ],
)
def test_unusable_entries_raise_logprob_error(entry: dict[str, Any]) -> None:
    with pytest.raises(LogprobError):
        _one_digit(entry)


def _judge_tokens(reply: str, digits: dict[int, list[tuple[str, float]]]) -> list[dict[str, Any]]:
    """Tokenise `reply` one character a token; at the given offsets use the given alternatives."""
    tokens = []
    for index, char in enumerate(reply):
        tops = [_alt(t, p) for t, p in digits.get(index, [(char, 1.0)])]
        tokens.append(
            _entry(char, 1.0 if index not in digits else math.exp(tops[0]["logprob"]), tops)
        )
    return tokens


REPLY = (
    '{"scores": {"Helpfulness": {"rationale": "It says \\"score\\": 1 is fair", "score": 4}, '
    '"Safety": {"rationale": "fine", "score": 5}}}'
)


def test_expected_scores_read_each_aspect_at_its_score_position() -> None:
    help_at = REPLY.index('"score": 4') + len('"score": ')
    safe_at = REPLY.index('"score": 5') + len('"score": ')
    tokens = _judge_tokens(
        REPLY, {help_at: [("4", 0.5), ("3", 0.5)], safe_at: [("5", 0.9), ("1", 0.1)]}
    )
    got = expected_scores(tokens, {"Helpfulness": 4, "Safety": 5})
    assert got == pytest.approx({"Helpfulness": 3.5, "Safety": 4.6})


def test_quoted_keys_inside_a_rationale_are_not_the_score() -> None:
    offset = field_value_offset(REPLY.encode(), "Helpfulness", "score")
    assert REPLY.encode()[offset : offset + 1] == b"4"


def test_logprobs_that_do_not_spell_the_parsed_score_are_rejected() -> None:
    with pytest.raises(LogprobError, match="do not spell"):
        expected_scores(_judge_tokens(REPLY, {}), {"Helpfulness": 3, "Safety": 5})
    with pytest.raises(LogprobError, match="no token logprobs"):
        expected_scores(None, {"Helpfulness": 4})


def test_multibyte_characters_split_over_tokens_keep_offsets_right() -> None:
    reply = '{"A": {"rationale": "café", "score": 2}}'
    raw = reply.encode()
    cut = raw.index("é".encode()) + 1  # the é's two bytes arrive in two tokens
    head, tail = raw[:cut], raw[cut:]
    at = tail.index(b"2")
    tokens = [
        {"token": "x", "bytes": list(head), "logprob": 0.0, "top_logprobs": []},
        {"token": "y", "bytes": list(tail[:at]), "logprob": 0.0, "top_logprobs": []},
        _entry("2", 0.5, [_alt("2", 0.5), _alt("1", 0.5)]),
        {"token": "}}", "logprob": 0.0, "top_logprobs": []},
    ]
    assert expected_scores(tokens, {"A": 2}) == pytest.approx({"A": 1.5})


def test_reward_prefers_probability_scores_only_when_every_aspect_has_one() -> None:
    both = Judgement(
        scores=(
            AspectScore(aspect="a", score=4, expected=3.5),
            AspectScore(aspect="b", score=4, expected=4.25),
        )
    )
    assert both.reward == pytest.approx(3.875)
    assert both.integer_reward == 4
    mixed = Judgement(
        scores=(AspectScore(aspect="a", score=4, expected=3.5), AspectScore(aspect="b", score=2))
    )
    assert not mixed.probability_weighted
    assert mixed.reward == 3


# ---- through the HTTP client ---------------------------------------------------------------

ASPECTS = (Aspect(name="Helpfulness", definition="answers the question"),)


def _judge_reply(request: StubRequest) -> str:
    return json.dumps({"scores": {"Helpfulness": {"rationale": "ok", "score": 4}}})


def _good_logprobs(request: StubRequest, text: str) -> list[dict[str, Any]]:
    at = text.index('"score": 4') + len('"score": ')
    return _judge_tokens(text, {at: [("4", 0.5), (" 5", 0.25), ("2", 0.25)]})


def _client(url: str, store: RunStore | None = None, **settings: Any) -> RoleClient:
    return stub_judge(url, store.for_run("r1") if store is not None else None, **settings)


def _score(client: RoleClient) -> Any:
    return asyncio.run(score_answer(client, "q?", "an answer", ASPECTS, tag="t"))


def test_probability_scores_through_the_endpoint_and_the_reply_cache(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    with StubServer(_judge_reply, logprobs=_good_logprobs) as stub:
        first = _score(_client(stub.base_url, store))
        again = _score(_client(stub.base_url, store))
        assert stub.count("Judgement") == 1  # the second came from the cache, logprobs too
        body = stub.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] >= 5
    for scored in (first, again):
        (score,) = scored.judgement.scores
        assert (score.score, scored.fallback) == (4, None)
        assert score.expected == pytest.approx(4 * 0.5 + 5 * 0.25 + 2 * 0.25)
    store.record_answer("r1", "a1", "c", "q", "q?", "an answer", "search", 0)
    store.record_judgement("r1", "a1", first.judgement)
    row = next(store.db.table("judgements").rows_where("answer_id = 'a1'"))
    assert (row["score"], row["expected_score"]) == (4, pytest.approx(3.75))


@pytest.mark.parametrize(
    "logprobs",
    [
        lambda request, text: None,  # the endpoint ignores the request
        lambda request, text: [{"token": "{", "logprob": "bad"}],  # malformed payload
        lambda request, text: [{"token": text, "logprob": -0.1, "top_logprobs": []}],
    ],
)
def test_missing_or_malformed_logprobs_fall_back_to_integers(logprobs: Any) -> None:
    with StubServer(_judge_reply, logprobs=logprobs) as stub:
        scored = _score(_client(stub.base_url))
    (score,) = scored.judgement.scores
    assert (score.score, score.expected) == (4, None)
    assert scored.fallback
    assert scored.judgement.reward == 4


def test_logprobs_off_sends_no_logprob_request() -> None:
    with StubServer(_judge_reply, logprobs=_good_logprobs) as stub:
        scored = _score(_client(stub.base_url, logprobs=False))
        assert "logprobs" not in stub.requests[0].body
    assert scored.fallback is None and scored.judgement.scores[0].expected is None


# ---- a real reply: the embedded 1.5B judge through llama.cpp (judge-check, off_topic-01) -----
# Stored from the run store with its token logprobs; only the alternatives of tokens that are
# not digits were cut to one, to keep the file small (the reader never looks at them).
REAL = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "llamacpp_judge_logprobs.json").read_text()
)


def _by_hand(content: list[dict[str, Any]]) -> list[float]:
    """Expected scores computed apart from drpo's reader: walk the tokens, and at the first
    non-blank token after each `"score":`, average the digits 1–5 among its alternatives,
    renormalised."""
    text, values = "", []
    for entry in content:
        if re.search(r'"score":\s*$', text) and entry["token"].strip():
            digits = {str(d): d for d in range(1, 6)}
            mass: dict[int, float] = {}
            for alt in entry["top_logprobs"]:
                if alt["token"].strip() in digits:
                    digit = digits[alt["token"].strip()]
                    mass[digit] = mass.get(digit, 0.0) + math.exp(alt["logprob"])
            values.append(sum(d * p for d, p in mass.items()) / sum(mass.values()))
        text += entry["token"]
    return values


def test_a_real_llamacpp_reply_is_read_at_each_aspects_score_token() -> None:
    assert "".join(e["token"] for e in REAL["logprobs"]) == REAL["reply"]
    parsed = json.loads(REAL["reply"])["scores"]
    integers = {name: verdict["score"] for name, verdict in parsed.items()}
    assert integers == {"Helpfulness": 4, "Factuality": 5, "Conciseness": 5}
    expected = expected_scores(REAL["logprobs"], integers)
    # The server listed "0", "6", "7" and " " beside the digits: they are not scores.
    assert list(expected.values()) == pytest.approx(_by_hand(REAL["logprobs"]))
    assert 3.5 < expected["Helpfulness"] < 4.5 < expected["Conciseness"] <= 5.0
