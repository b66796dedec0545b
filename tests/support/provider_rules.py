"""The request rules of real providers, for the stub server's provider modes.

Each mode refuses what the provider refuses, with its status and error-body shape, and lists
what the provider silently ignores (a request relying on an ignored field "works" but loses
something, e.g. Ollama answers one choice for `n: 3`). The rules come from the providers'
public documentation:

- openai / azure: OpenAI's Structured Outputs guide, "Supported schemas" (strict mode: every
  object `additionalProperties: false`, every property in `required`, only the documented
  keywords; root an object), JSON mode's "the word JSON must appear in the messages", and the
  reasoning-model parameter rules (o-series, gpt-5 family: no `max_tokens`, no `temperature` /
  `top_p` other than 1, no `logprobs`; `reasoning_effort` only on reasoning models).
- vllm: `response_format` types `text`, `json_object`, `json_schema` (with a schema) and
  `structural_tag`; guided decoding honours the rest of JSON Schema; `n` is honoured.
- llamacpp: llama-server's OpenAI layer as servers older than its `n_cmpl` support have it: one
  choice per request ("Only one completion choice is allowed"), `response_format` `text` /
  `json_object` / `json_schema`; its JSON-schema grammar ignores string `maxLength` above 2000.
  (The embedded server drpo installs accepts `n`; tests/live checks it against the real one.)
- ollama: the OpenAI-compatibility page's supported fields: `n` and `max_completion_tokens`
  are not among them (ignored: one choice, no length cap); `response_format` json_object /
  json_schema are.
- anthropic: Claude's OpenAI SDK compatibility page: `n` must be exactly 1; `response_format`,
  `logprobs`, `seed` and `reasoning_effort` are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROVIDERS = ("openai", "azure", "vllm", "llamacpp", "ollama", "anthropic")
_REASONING = re.compile(r"^(o\d|gpt-5)")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OPENAI_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "anyOf", "enum",
        "const", "$ref", "$defs", "definitions", "description", "title", "pattern", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems",
        "maxItems",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Refusal:
    """An error reply as the provider sends it."""

    status: int
    body: dict[str, Any]


def probe_reply(provider: str | None, path: str) -> dict[str, Any] | None:
    """What the provider answers to the identity probes drpo sends (None: 404)."""
    if provider == "llamacpp" and path == "/props":
        return {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
    if provider == "vllm" and path == "/version":
        return {"version": "0.11.0"}
    if provider == "ollama" and path == "/api/version":
        return {"version": "0.12.6"}
    return None


_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)(/chat/completions)$")


def azure_route(raw_path: str) -> tuple[str, Refusal | None]:
    """Map Azure's classic `/openai/deployments/NAME/chat/completions?api-version=…` onto the
    stub's chat path; without an api-version, or at the bare resource, Azure answers 404
    "Resource not found"."""
    path, _, query = raw_path.partition("?")
    path = path.rstrip("/")
    match = _AZURE_DEPLOYMENT.match(path)
    if match is None:
        # The stub's /v1 stands for Azure's v1 API (/openai/v1); a resource has no bare path.
        missing = Refusal(404, {"error": {"code": "404", "message": "Resource not found"}})
        return path, missing if path == "/chat/completions" else None
    if "api-version=" not in query:
        return path, Refusal(404, {"error": {"code": "404", "message": "Resource not found"}})
    return match.group(2), None


def check_request(provider: str, body: Mapping[str, Any]) -> Refusal | None:
    """The refusal the provider sends for this chat-completions body, or None if it accepts."""
    checks = {
        "openai": _openai,
        "azure": _openai,
        "vllm": _vllm,
        "llamacpp": _llamacpp,
        "ollama": _ollama,
        "anthropic": _anthropic,
    }
    return checks[provider](body)


def ignored_fields(provider: str, body: Mapping[str, Any]) -> list[str]:
    """Fields of `body` this provider silently ignores (or only partly honours)."""
    ignored: list[str] = []
    if provider == "ollama":
        if int(body.get("n") or 1) > 1:
            ignored.append("n")
        if "max_completion_tokens" in body:
            ignored.append("max_completion_tokens")
    if provider == "anthropic":
        ignored += [f for f in ("response_format", "logprobs", "reasoning_effort") if f in body]
    if provider == "llamacpp" and _max_length_over(_schema_of(body), 2000):
        ignored.append("response_format (maxLength > 2000)")
    return ignored


def honoured_choices(provider: str, n: int) -> int:
    return 1 if provider == "ollama" else n


# ---- OpenAI ---------------------------------------------------------------------------------


def _openai_error(message: str, param: str | None, code: str | None = None) -> Refusal:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return Refusal(400, {"error": error})


def _is_reasoning(model: str) -> bool:
    name = model.rsplit("/", 1)[-1].lower()
    return bool(_REASONING.match(name)) and "chat" not in name


def _openai(body: Mapping[str, Any]) -> Refusal | None:
    model = str(body.get("model") or "")
    reasoning = _is_reasoning(model)
    if reasoning:
        if "max_tokens" in body:
            return _openai_error(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        for name in ("temperature", "top_p"):
            if name in body and body[name] != 1:
                return _openai_error(
                    f"Unsupported value: '{name}' does not support {body[name]} with this "
                    "model. Only the default (1) value is supported.",
                    name,
                    "unsupported_value",
                )
        if body.get("logprobs"):
            return _openai_error(
                "Unsupported parameter: 'logprobs' is not supported with this model.",
                "logprobs",
                "unsupported_parameter",
            )
    elif "reasoning_effort" in body:
        return _openai_error(
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "reasoning_effort",
            "unsupported_parameter",
        )
    return _openai_response_format(body)


def _openai_response_format(body: Mapping[str, Any]) -> Refusal | None:
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        text = " ".join(str(m.get("content")) for m in body.get("messages") or [])
        if "json" not in text.lower():
            return _openai_error(
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                "messages",
            )
        return None
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    name = str(spec.get("name") or "")
    if not _SCHEMA_NAME.match(name):
        return _openai_error(
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            "response_format.json_schema.name",
            "invalid_value",
        )
    if not spec.get("strict"):
        return None
    schema = spec.get("schema")
    problem = _strict_problem(schema, ()) if isinstance(schema, dict) else ((), "no schema")
    if problem is None:
        return None
    context, text = problem
    return _openai_error(
        f"Invalid schema for response_format '{name}': In context={context}, {text}",
        "response_format",
    )


def _strict_problem(schema: Mapping[str, Any], context: tuple[str, ...]) -> Any:
    """The first way `schema` breaks OpenAI's strict subset, as (context, message), or None."""
    if not context and (schema.get("type") != "object" or "anyOf" in schema):
        return context, "schema must be a JSON Schema of 'type: \"object\"', got 'type: None'."
    for key in schema:
        if key not in OPENAI_KEYWORDS:
            return context, f"'{key}' is not permitted."
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return context, "'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        missing = [name for name in properties if name not in required]
        if missing:
            return context, (
                "'required' is required to be supplied and to be an array including every "
                f"key in properties. Missing '{missing[0]}'."
            )
        for name, sub in properties.items():
            found = _strict_problem(sub, (*context, "properties", name))
            if found:
                return found
    for name, sub in (schema.get("$defs") or {}).items():
        found = _strict_problem(sub, (*context, "$defs", name))
        if found:
            return found
    if isinstance(schema.get("items"), dict):
        found = _strict_problem(schema["items"], (*context, "items"))
        if found:
            return found
    for index, variant in enumerate(schema.get("anyOf") or []):
        found = _strict_problem(variant, (*context, "anyOf", str(index)))
        if found:
            return found
    return None


# ---- model servers --------------------------------------------------------------------------


def _vllm(body: Mapping[str, Any]) -> Refusal | None:
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema", "structural_tag"):
            return _vllm_error(f"Unknown response_format type: {kind}")
        if kind == "json_schema" and not (response_format.get("json_schema") or {}).get("schema"):
            return _vllm_error("response_format.json_schema.schema must be provided")
    return None


def _vllm_error(message: str) -> Refusal:
    return Refusal(
        400, {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    )


def _llamacpp(body: Mapping[str, Any]) -> Refusal | None:
    if int(body.get("n") or 1) != 1:
        return _llamacpp_error("Only one completion choice is allowed")
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            return _llamacpp_error(
                f'response_format type must be one of "text" or "json_object", but got: {kind}'
            )
    return None


def _llamacpp_error(message: str) -> Refusal:
    return Refusal(
        400, {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    )


def _ollama(body: Mapping[str, Any]) -> Refusal | None:
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            return _openai_error(f"invalid response format type: {kind}", None)
    return None


def _anthropic(body: Mapping[str, Any]) -> Refusal | None:
    if int(body.get("n") or 1) != 1:
        return Refusal(
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "n: must be exactly 1"},
            },
        )
    return None


def _schema_of(body: Mapping[str, Any]) -> Any:
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema")
    return None


def _max_length_over(node: Any, cap: int) -> bool:
    if isinstance(node, list):
        return any(_max_length_over(item, cap) for item in node)
    if isinstance(node, dict):
        length = node.get("maxLength")
        if isinstance(length, int) and length > cap:
            return True
        return any(_max_length_over(value, cap) for value in node.values())
    return False
