"""Extract and validate a JSON object from a model's reply text."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ReplyParseError(ValueError):
    """The reply held no JSON object valid for the schema; the message says why in one line."""


def extract_json_object(text: str) -> str:
    """Return the first balanced {...} block that decodes as JSON, skipping chatter around it."""
    first_error: json.JSONDecodeError | None = None
    for candidate in _balanced_blocks(text):
        if candidate is None:
            continue
        try:
            json.loads(candidate)
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
            continue
        return candidate
    if first_error is not None:
        raise ReplyParseError(f"invalid JSON: {first_error.msg} at char {first_error.pos}")
    raise ReplyParseError("no complete JSON object in the reply (truncated or missing)")


def _balanced_blocks(text: str) -> Iterator[str | None]:
    """Yield each balanced {...} block in order; None marks one left open (a cut-off reply)."""
    start = text.find("{")
    while start != -1:
        depth = 0
        in_string = False
        escaped = False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    yield text[start : index + 1]
                    break
        else:
            yield None
        start = text.find("{", start + 1)


def parse_reply(
    text: str, schema: type[ModelT], prepare: Callable[[Any], Any] | None = None
) -> ModelT:
    """Parse `text` into `schema`, raising ReplyParseError with a one-line reason.

    `prepare` adjusts the decoded JSON before validation (e.g. drops a strict schema's nulls).
    """
    candidate = extract_json_object(text)
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise ReplyParseError(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
    if prepare is not None:
        data = prepare(data)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ReplyParseError(
            f"reply does not match the schema at {where}: {first['msg']}"
        ) from None
