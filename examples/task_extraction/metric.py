"""JSON-schema validity for an extraction task, as a drpo metric.

The answer must be one JSON object valid for the task's schema — a pydantic model, so the schema
is `Contact.model_json_schema()` — for half the score; the other half is for the fields that
agree with the reference.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drpo.nodes.metric import MetricResult


class Contact(BaseModel):
    """What the extraction must return, and nothing else."""

    model_config = ConfigDict(extra="forbid")
    name: str
    email: str | None = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    company: str | None


def _strip_fence(answer: str) -> str:
    text = answer.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def schema_valid(query: str, answer: str, reference: str | None) -> MetricResult:
    """Half for a reply valid for `Contact`, the rest for the fields matching the reference."""
    try:
        contact = Contact.model_validate_json(_strip_fence(answer))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        return MetricResult(score=0.0, reason=f"not valid for the schema: {where}: {first['msg']}")
    if reference is None:
        return MetricResult(score=1.0, reason="valid JSON for the schema")
    expected = Contact.model_validate(json.loads(reference))
    fields = ("name", "email", "company")
    right = [f for f in fields if getattr(contact, f) == getattr(expected, f)]
    wrong = [f for f in fields if f not in right]
    reason = "valid; all fields right" if not wrong else f"valid; wrong: {', '.join(wrong)}"
    return MetricResult(score=0.5 + 0.5 * len(right) / len(fields), reason=reason)
