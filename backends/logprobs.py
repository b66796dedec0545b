"""Probability-weighted scores from token logprobs (the G-Eval approach).

A judge that writes "4" usually had some probability on "3" and "5" too. The expected value over
the score digits at the digit's position in the reply keeps that resolution, where the integer
throws it away. The payload is OpenAI's chat `logprobs.content` list, which llama.cpp and vLLM
return in the same shape: one entry per generated token, each with `token`, `logprob`, optional
`bytes` and `top_logprobs` (alternatives at that position). Anything else raises LogprobError,
so the caller can fall back to the integer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

# Logprob payload: the `content` list of one choice, as the server sent it (decoded JSON).
TokenLogprobs = Sequence[Mapping[str, Any]]
T = TypeVar("T")


class LogprobError(ValueError):
    """The logprob payload cannot give a score's distribution; the message says why in one line."""


def reply_bytes(content: TokenLogprobs) -> tuple[bytes, list[tuple[int, int]]]:
    """The reply's bytes rebuilt from its tokens, and each token's byte span in them.

    Bytes, not text: a multi-byte character split over two tokens has no text of its own, so
    character offsets would drift; `bytes` is used where the server gives it.
    """
    if not isinstance(content, Sequence) or not content:
        raise LogprobError("no token logprobs in the reply")
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for entry in content:
        part = _token_bytes(entry)
        spans.append((position, position + len(part)))
        parts.append(part)
        position += len(part)
    return b"".join(parts), spans


def _token_bytes(entry: Any) -> bytes:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("token"), str):
        raise LogprobError("a token logprob entry has no token text")
    raw = entry.get("bytes")
    if isinstance(raw, list) and raw and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    return str(entry["token"]).encode()


def expected_digit(
    content: TokenLogprobs, spans: Sequence[tuple[int, int]], offset: int, digits: range
) -> float:
    """The expected value of the digit written at byte `offset`, over the digits in `digits`.

    "4" and " 4" both count as 4 (merged). Probabilities are renormalised over the digits found,
    so top alternatives that miss some digits still give a value (those digits count as 0).
    """
    allowed = {str(d): d for d in digits}
    chance = label_distribution(content, spans, offset, allowed.get)
    return sum(digit * p for digit, p in chance.items())


def label_distribution(
    content: TokenLogprobs,
    spans: Sequence[tuple[int, int]],
    offset: int,
    label_of: Callable[[str], T | None],
) -> dict[T, float]:
    """The probability of each label at the token written at byte `offset`, renormalised.

    `label_of` names the label a token spells once whitespace and JSON quotes around it are
    stripped (None: not a label). The chosen token must spell one; alternatives spelling the same
    label are merged, and the chosen token's own logprob counts when its alternatives omit it.
    """
    index = next((i for i, (start, end) in enumerate(spans) if start <= offset < end), None)
    if index is None:
        raise LogprobError("the value is not covered by the token logprobs")
    entry = content[index]
    chosen_label = label_of(_bare(str(entry["token"])))
    if chosen_label is None:
        raise LogprobError(f"the token {entry['token']!r} is not a value of its own")
    alternatives = entry.get("top_logprobs")
    if not isinstance(alternatives, list) or not alternatives:
        raise LogprobError("the value's token has no top_logprobs")
    mass: dict[T, float] = {}
    for alternative in alternatives:
        token, logprob = _alternative(alternative)
        label = label_of(_bare(token))
        if label is not None:
            mass[label] = mass.get(label, 0.0) + math.exp(logprob)
    if chosen_label not in mass:
        # Some servers list only the alternatives; the chosen token's own logprob is then extra.
        mass[chosen_label] = math.exp(_logprob(entry.get("logprob")))
    total = sum(mass.values())
    if total <= 0.0:
        raise LogprobError("the values have no probability")
    return {label: p / total for label, p in mass.items()}


def _bare(token: str) -> str:
    return token.strip(' \t\r\n"')


def _alternative(alternative: Any) -> tuple[str, float]:
    if not isinstance(alternative, Mapping) or not isinstance(alternative.get("token"), str):
        raise LogprobError("a top_logprobs entry has no token text")
    return alternative["token"], _logprob(alternative.get("logprob"))


def _logprob(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise LogprobError(f"a logprob is not a number: {value!r}")
    if value > 0:
        raise LogprobError(f"a logprob is positive: {value!r}")
    return float(value)


def field_value_offset(reply: bytes, parent_key: str | None, key: str) -> int:
    """Byte offset of the first character of `key`'s value inside the object under `parent_key`
    (the first `key` anywhere when `parent_key` is None).

    A quote preceded by a backslash is inside a JSON string, so keys quoted in a rationale
    ("the \\"score\\": 5 it asks for") are never taken for the real ones.
    """
    start = 0
    if parent_key is not None:
        parent = re.search(rb'(?<!\\)"' + re.escape(_json_key(parent_key)) + rb'"\s*:\s*\{', reply)
        if parent is None:
            raise LogprobError(f"no {parent_key!r} object in the reply")
        start = parent.end()
    field = re.compile(rb'(?<!\\)"' + re.escape(_json_key(key)) + rb'"\s*:\s*').search(reply, start)
    if field is None:
        raise LogprobError(f"no {key!r} under {parent_key!r} in the reply")
    return field.end()


def _json_key(name: str) -> bytes:
    # How a JSON writer spells the key between its quotes (no ASCII escaping: models write UTF-8).
    return re.sub(r'(["\\])', r"\\\1", name).encode()
