"""Turn a pydantic reply model into what the role's endpoint accepts.

The wire schema is only a hint to the server's constrained decoding; every reply is still
validated locally against the full pydantic model (lengths, ranges, enums), and an invalid one
is asked for again. The dialects:

- `strict` (OpenAI, Azure OpenAI): the openai SDK's strict-schema helper makes every property
  required and sets `additionalProperties: false` at every level; before it runs, an optional
  field is made nullable (a null is dropped again before validation, so its default applies),
  and afterwards every keyword outside OpenAI's documented subset (e.g. `minLength`,
  `maxLength`, `default`) is removed from the wire copy.
- `llamacpp`: pydantic's schema as is, with string `maxLength` capped at 2000: llama.cpp's
  grammar ignores larger caps, and the caps are what stop a small model's runaway strings.
- `plain` (vLLM, Ollama, generic servers): pydantic's schema as is.

Without `json_schema`, `json_object` asks for JSON mode and `prompt` asks for nothing; both put
the schema in the system prompt, and the JSON is pulled out of the reply text.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from openai.lib._pydantic import _ensure_strict_json_schema
from pydantic import BaseModel

from drpo.backends.providers import ProviderProfile

LLAMACPP_MAX_LENGTH = 2000
SCHEMA_IN_PROMPT = "\n\nThe reply must be one JSON object valid for this JSON schema:\n"
# OpenAI Structured Outputs, "Supported schemas": the keywords it accepts in strict mode.
OPENAI_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "anyOf",
        "enum",
        "const",
        "$ref",
        "$defs",
        "definitions",
        "description",
        "title",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
# Keywords whose value is a map of names to subschemas (not a subschema itself).
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


@dataclass(frozen=True)
class ReplyFormat:
    """How to ask one endpoint for a reply model: the body field and the system-prompt tail."""

    response_format: dict[str, Any] | None
    system_suffix: str
    # Strict schemas send optional fields as nullable; their nulls are dropped before validation.
    drops_nulls: bool


def reply_format(model: type[BaseModel], profile: ProviderProfile) -> ReplyFormat:
    """What to send so the endpoint of `profile` constrains (or at least asks for) `model`."""
    mode = profile.structured_output
    if mode != "json_schema":
        schema = model.model_json_schema()
        suffix = SCHEMA_IN_PROMPT + json.dumps(schema, ensure_ascii=False)
        response_format = {"type": "json_object"} if mode == "json_object" else None
        return ReplyFormat(response_format, suffix, drops_nulls=False)
    strict = profile.dialect == "strict"
    schema = wire_schema(model, profile)
    return ReplyFormat(
        {
            "type": "json_schema",
            "json_schema": {
                "name": schema.get("title", "Reply"),
                "schema": schema,
                "strict": True,
            },
        },
        "",
        drops_nulls=strict,
    )


def wire_schema(model: type[BaseModel], profile: ProviderProfile) -> dict[str, Any]:
    """The JSON schema for `model` in the dialect of `profile`."""
    if profile.dialect == "strict":
        return openai_strict_schema(model)
    schema = model.model_json_schema()
    if profile.dialect == "llamacpp":
        _cap_max_length(schema)
    return schema


def openai_strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s schema in OpenAI's strict subset (see the module docstring)."""
    schema = model.model_json_schema()
    _make_optionals_nullable(schema)
    strict = _ensure_strict_json_schema(schema, path=(), root=schema)
    wire: dict[str, Any] = _only_keywords(strict, OPENAI_KEYWORDS)
    return wire


def drop_null_optionals(data: Any, model: type[BaseModel]) -> Any:
    """Remove the nulls a strict schema made possible for optional fields, so defaults apply.

    A null stays where the field itself accepts None (pydantic then validates it as sent).
    """
    if not isinstance(data, dict):
        return data
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            cleaned[key] = value
            continue
        if value is None and not field.is_required() and not _accepts_none(field.annotation):
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            value = drop_null_optionals(value, nested)
        cleaned[key] = value
    return cleaned


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in getattr(annotation, "__args__", ())


def _make_optionals_nullable(node: Any) -> None:
    """Wrap each property missing from `required` as anyOf [itself, null], at every level."""
    if isinstance(node, list):
        for item in node:
            _make_optionals_nullable(item)
        return
    if not isinstance(node, dict):
        return
    properties = node.get("properties")
    if isinstance(properties, dict):
        required = set(node.get("required") or [])
        for name, sub in list(properties.items()):
            _make_optionals_nullable(sub)
            if name not in required and not _is_nullable(sub):
                kept = {k: v for k, v in sub.items() if k not in ("title", "description")}
                labels = {k: v for k, v in sub.items() if k in ("title", "description")}
                properties[name] = {**labels, "anyOf": [kept, {"type": "null"}]}
    for key, value in node.items():
        if key != "properties":
            _make_optionals_nullable(value)


def _is_nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("type") == "null" or "null" in (schema.get("type") or []):
        return True
    return any(_is_nullable(variant) for variant in schema.get("anyOf") or [])


def _only_keywords(node: Any, allowed: frozenset[str]) -> Any:
    """A copy of `node` keeping only `allowed` keywords in every subschema."""
    if isinstance(node, list):
        return [_only_keywords(item, allowed) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key not in allowed:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            kept[key] = {name: _only_keywords(sub, allowed) for name, sub in value.items()}
        elif key in ("items", "anyOf", "additionalProperties"):
            kept[key] = _only_keywords(value, allowed)
        else:
            kept[key] = copy.deepcopy(value)
    return kept


def _cap_max_length(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _cap_max_length(item)
    elif isinstance(node, dict):
        if isinstance(node.get("maxLength"), int) and node["maxLength"] > LLAMACPP_MAX_LENGTH:
            node["maxLength"] = LLAMACPP_MAX_LENGTH
        for value in node.values():
            _cap_max_length(value)
