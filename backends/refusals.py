"""Say in one line why an endpoint refused a request, and which role setting changes that."""

from __future__ import annotations

import re
from typing import Any

import openai

from drpo.backends.providers import ProviderProfile

# "n: must be exactly 1", "'n' must be 1": a message about the choice count.
_NAMES_N = re.compile(r"^['\"`]?n['\"`]?[:\s]")
_SAMPLING = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "logprobs")


def describe_refusal(
    role: str, endpoint: str, profile: ProviderProfile, exc: openai.APIStatusError
) -> tuple[str, str]:
    """The line `endpoint (provider) refused the request (HTTP 400): <its message>; to fix it
    set <setting>`, and that setting as a `KEY=VALUE` for `drpo resume --set` ("" if none)."""
    message, param = _provider_message(exc)
    fix, assignment = _fix(role, profile, message, param)
    line = (
        f"{endpoint} ({profile.kind}) refused the request (HTTP {exc.status_code}): "
        f"{message}; to fix it set {fix}"
    )
    return line, assignment


def _provider_message(exc: openai.APIStatusError) -> tuple[str, str]:
    """The provider's own message and the parameter it names, from the error body."""
    body: Any = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]  # Anthropic's shape nests one level deeper than OpenAI's
    if isinstance(body, dict) and body.get("message"):
        text, param = str(body["message"]), str(body.get("param") or "")
    else:
        text, param = str(exc.message), ""
    return " ".join(text.split())[:400].rstrip("."), param


def _fix(role: str, profile: ProviderProfile, message: str, param: str) -> tuple[str, str]:
    lowered = message.lower()
    if param.startswith("response_format") or "schema" in lowered or "json" in lowered:
        fallback = "json_object" if profile.structured_output == "json_schema" else "prompt"
        plain = f'{role}.structured_output = "{fallback}"'
        if profile.kind == "generic" and profile.structured_output == "json_schema":
            # Many proxies forward to OpenAI, whose strict subset drpo follows when told.
            return f'{role}.provider = "openai" (strict schemas) or {plain}', (
                f"{role}.provider=openai"
            )
        return plain, f"{role}.structured_output={fallback}"
    if param == "n" or "choice" in lowered or _NAMES_N.match(lowered):
        return f"{role}.supports_n = false", f"{role}.supports_n=false"
    if param == "reasoning_effort" or "reasoning_effort" in lowered:
        return f"no {role}.reasoning_effort (this model does not reason)", ""
    kind = f"{role}.provider to the endpoint's kind (now {profile.kind!r})"
    if param in _SAMPLING or any(name in lowered for name in _SAMPLING):
        return f"{kind} so drpo follows its parameter rules", ""
    return kind, ""
