"""Tests for extracting and validating a JSON object from a model's free-text reply."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field

from drpo.backends.json_reply import ReplyParseError, extract_json_object, parse_reply


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rationale: str
    score: int = Field(ge=1, le=5)


class Wrapped(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Verdict
    note: str = ""


def test_plain_object_is_returned_unchanged() -> None:
    text = '{"rationale": "ok", "score": 4}'
    assert extract_json_object(text) == text


def test_extracts_from_fenced_code_block() -> None:
    text = 'Here you go:\n```json\n{"rationale": "fine", "score": 3}\n```\n'
    assert extract_json_object(text) == '{"rationale": "fine", "score": 3}'
    assert parse_reply(text, Verdict) == Verdict(rationale="fine", score=3)


def test_ignores_chatter_before_and_after() -> None:
    text = 'Sure! My evaluation:\n{"rationale": "clear", "score": 5}\nHope this helps.'
    assert parse_reply(text, Verdict) == Verdict(rationale="clear", score=5)


def test_nested_braces_are_balanced() -> None:
    text = 'Result: {"verdict": {"rationale": "r", "score": 2}, "note": "n"} trailing }'
    extracted = extract_json_object(text)
    assert json.loads(extracted) == {"verdict": {"rationale": "r", "score": 2}, "note": "n"}
    assert parse_reply(text, Wrapped).verdict.score == 2


def test_braces_inside_strings_do_not_count() -> None:
    text = '{"rationale": "uses } and { and \\"}\\" in text", "score": 1} after'
    extracted = extract_json_object(text)
    assert extracted.endswith('"score": 1}')
    assert parse_reply(text, Verdict).rationale == 'uses } and { and "}" in text'


def test_escaped_backslash_before_closing_quote() -> None:
    # The string ends after an escaped backslash; a naive escape check would swallow the quote.
    text = '{"rationale": "path C:\\\\", "score": 2}'
    assert parse_reply(text, Verdict).rationale == "path C:\\"


def test_first_of_two_objects_is_taken() -> None:
    text = '{"rationale": "a", "score": 1}\n{"rationale": "b", "score": 5}'
    assert parse_reply(text, Verdict).rationale == "a"


@pytest.mark.parametrize(
    "text",
    [
        '{"rationale": "cut off mid-sent',
        '```json\n{"rationale": "r", "score": 3\n',
        "no json here at all",
        "",
    ],
)
def test_truncated_or_missing_json_raises(text: str) -> None:
    with pytest.raises(ReplyParseError) as exc:
        parse_reply(text, Verdict)
    assert "no complete JSON object" in str(exc.value)


def test_truncated_outer_object_is_not_accepted() -> None:
    # Only the inner object is balanced; it does not satisfy the outer schema.
    text = '{"verdict": {"rationale": "r", "score": 4}, "note": "trunc'
    with pytest.raises(ReplyParseError):
        parse_reply(text, Wrapped)


def test_invalid_json_inside_braces_raises() -> None:
    with pytest.raises(ReplyParseError) as exc:
        parse_reply("{'rationale': 'single quotes', 'score': 3}", Verdict)
    assert str(exc.value).startswith("invalid JSON")


def test_schema_mismatch_names_the_field() -> None:
    with pytest.raises(ReplyParseError) as exc:
        parse_reply('{"rationale": "r", "score": 9}', Verdict)
    message = str(exc.value)
    assert "score" in message
    assert "\n" not in message


def test_schema_mismatch_names_the_nested_field() -> None:
    with pytest.raises(ReplyParseError) as exc:
        parse_reply('{"verdict": {"rationale": "r"}}', Wrapped)
    assert "verdict.score" in str(exc.value)


def test_extra_field_is_a_schema_mismatch() -> None:
    with pytest.raises(ReplyParseError) as exc:
        parse_reply('{"rationale": "r", "score": 3, "bonus": true}', Verdict)
    assert "bonus" in str(exc.value)


def test_reply_parse_error_is_a_value_error() -> None:
    assert issubclass(ReplyParseError, ValueError)


def test_braces_in_chatter_before_the_object_are_skipped() -> None:
    text = 'Here is the result in the format {json}:\n{"rationale": "ok", "score": 4}'
    assert parse_reply(text, Verdict) == Verdict(rationale="ok", score=4)
