"""What each kind of endpoint accepts, and how drpo tells which kind a role's endpoint is.

A `ProviderProfile` says, for one provider and model name, which structured-output mode and
schema dialect to use, whether `n > 1` and logprobs are honoured, whether the reply reports
prefix-cached tokens, and whether the model is a reasoning model (no temperature or top_p,
`max_completion_tokens` with room for the reasoning tokens). `detect_provider` asks the
endpoint itself; a role's `provider` setting overrides it.

What is probed, in order (each a GET at the server root, i.e. the base URL without `/v1`):
the host name (api.openai.com, *.openai.azure.com, api.anthropic.com), llama.cpp's `/props`
(a JSON object with `default_generation_settings`), vLLM's `/version` (`{"version": ...}`) and
Ollama's `/api/version` (`{"version": ...}`). Anything else is `generic`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from drpo.state.settings import ConfigError, RoleSettings

Kind = Literal["openai", "azure", "vllm", "llamacpp", "ollama", "anthropic", "generic"]
KINDS: tuple[Kind, ...] = ("openai", "azure", "vllm", "llamacpp", "ollama", "anthropic", "generic")
Dialect = Literal["strict", "plain", "llamacpp"]
StructuredMode = Literal["json_schema", "json_object", "prompt"]

PROBE_TIMEOUT = 5.0
# Reasoning tokens count against max_completion_tokens: without room for them a reasoning
# model can spend the whole limit thinking and return an empty reply.
REASONING_ALLOWANCE = {"none": 0, "minimal": 1024, "low": 2048, "medium": 4096, "high": 8192}
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


@dataclass(frozen=True)
class ProviderProfile:
    """What one kind of endpoint accepts for one model."""

    kind: Kind
    structured_output: StructuredMode
    dialect: Dialect
    supports_n: bool
    logprobs: bool
    reports_cached_tokens: bool
    reasoning: bool = False


def is_reasoning_model(model: str) -> bool:
    """OpenAI's o-series and gpt-5 family (not gpt-5-chat), also behind a `vendor/` prefix."""
    name = model.rsplit("/", 1)[-1].lower()
    return bool(_REASONING_MODEL.match(name)) and "chat" not in name


def profile_for(kind: Kind, model: str) -> ProviderProfile:
    """The rules drpo follows for `model` at an endpoint of this kind."""
    if kind in ("openai", "azure", "generic"):
        # A generic endpoint serving an OpenAI reasoning model name is a proxy in front of it.
        reasoning = is_reasoning_model(model)
        hosted = kind != "generic"
        return ProviderProfile(
            kind,
            "json_schema",
            "strict" if hosted else "plain",
            # As before this setting existed, a generic endpoint is trusted with `n`.
            supports_n=not reasoning,
            logprobs=hosted and not reasoning,
            reports_cached_tokens=hosted,
            reasoning=reasoning,
        )
    if kind == "llamacpp":
        # Servers older than llama.cpp's `n_cmpl` refuse `n` > 1, so a remote one gets one
        # request per choice unless its role says `supports_n = true` (the embedded server,
        # whose version drpo installs, always sends `n`: `effective_profile`).
        return ProviderProfile(kind, "json_schema", "llamacpp", False, True, True)
    if kind == "vllm":
        return ProviderProfile(kind, "json_schema", "plain", True, True, True)
    if kind == "ollama":
        # Ollama's OpenAI endpoint ignores `n` and answers one choice.
        return ProviderProfile(kind, "json_schema", "plain", False, True, False)
    # Anthropic's OpenAI-compatible endpoint ignores response_format and needs n == 1.
    return ProviderProfile(kind, "prompt", "plain", False, False, False)


def effective_profile(settings: RoleSettings, kind: Kind) -> ProviderProfile:
    """The kind's profile with the role's own `structured_output` / `supports_n` on top."""
    profile = profile_for(kind, settings.model)
    updates: dict[str, Any] = {}
    if settings.is_embedded:
        # The installed llama.cpp processes the prompt once for all `n` choices and copies it to
        # their slots: two choices in one request took 0.58x the time of two requests side by
        # side on a 2-vCPU EPYC (README "First-run time"); as separate requests a rewrite's
        # ~1,200-token prompt was processed once per choice.
        updates["supports_n"] = True
    if settings.structured_output != "auto":
        updates["structured_output"] = settings.structured_output
    if settings.supports_n is not None:
        updates["supports_n"] = settings.supports_n
    if not updates:
        return profile
    return replace(profile, **updates)


def model_options(settings: RoleSettings, profile: ProviderProfile) -> dict[str, Any]:
    """Sampling and length parameters for the role's chat client, as the provider takes them."""
    if profile.kind == "ollama" and settings.mode == "chat":
        # The length cap goes in `extra_fields`: LangChain would rename it.
        return {"temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": None}
    if not profile.reasoning or settings.mode == "completion":
        return {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
        }
    effort = settings.reasoning_effort
    room = REASONING_ALLOWANCE[effort or "medium"]
    # No temperature or top_p: reasoning models refuse any value but the default.
    options: dict[str, Any] = {"temperature": None, "top_p": None}
    options["max_tokens"] = settings.max_tokens + room  # sent as max_completion_tokens
    if effort is not None:
        options["reasoning_effort"] = effort
    return options


def extra_fields(settings: RoleSettings, profile: ProviderProfile) -> dict[str, Any]:
    """Body fields to send as they are, past LangChain's renaming.

    LangChain always sends the length cap as `max_completion_tokens`, which Ollama's OpenAI
    endpoint does not read (its documented field is `max_tokens`): without this, replies there
    would have no cap at all.
    """
    if profile.kind == "ollama" and settings.mode == "chat":
        return {"max_tokens": settings.max_tokens}
    return {}


def static_kind(settings: RoleSettings) -> Kind:
    """The kind known without asking the endpoint: the setting, embedded, or the host name."""
    if settings.provider != "auto":
        return settings.provider
    if settings.is_embedded:
        return "llamacpp"
    return kind_from_host(settings.endpoint) or "generic"


def kind_from_host(url: str) -> Kind | None:
    """The provider a well-known host name gives away (OpenAI, Azure, Anthropic), else None."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "api.openai.com":
        return "openai"
    if host.endswith((".openai.azure.com", ".cognitiveservices.azure.com")):
        return "azure"
    if host == "api.anthropic.com":
        return "anthropic"
    return None


def resolve_kind(role: str, settings: RoleSettings, api_key: str) -> Kind:
    """The role's provider: the setting, checked against what the endpoint reports; else detected.

    Raises ConfigError when the setting contradicts a kind the endpoint reports about itself.
    """
    if settings.is_embedded:
        if settings.provider not in ("auto", "llamacpp"):
            raise ConfigError(
                f"{role}.provider = {settings.provider!r} contradicts endpoint 'embedded' "
                '(the embedded server is llama.cpp; use provider = "llamacpp" or "auto")'
            )
        return "llamacpp"
    reported = {detect_provider(replica.url, api_key) for replica in settings.replicas}
    if settings.provider == "auto":
        return reported.pop() if len(reported) == 1 else "generic"
    if settings.provider == "generic":
        return "generic"  # "assume nothing" claims nothing a server could contradict
    for kind in reported - {"generic", settings.provider}:
        raise ConfigError(
            f"{role}.provider = {settings.provider!r} contradicts the endpoint "
            f"{settings.endpoint}, which reports itself as {kind!r} "
            f'(set {role}.provider = "{kind}" or "auto")'
        )
    return settings.provider


@functools.lru_cache(maxsize=64)
def detect_provider(url: str, api_key: str) -> Kind:
    """Ask the endpoint what it is (see the module docstring); `generic` when nothing says.

    Cached per process: the preflight and the model factory both ask.
    """
    by_host = kind_from_host(url)
    if by_host is not None:
        return by_host
    root = re.sub(r"/v1$", "", url.rstrip("/"))
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(timeout=PROBE_TIMEOUT, headers=headers) as client:
        props = _get_json(client, f"{root}/props")
        if isinstance(props, dict) and "default_generation_settings" in props:
            return "llamacpp"
        version = _get_json(client, f"{root}/version")
        if isinstance(version, dict) and "version" in version:
            return "vllm"
        version = _get_json(client, f"{root}/api/version")
        if isinstance(version, dict) and "version" in version:
            return "ollama"
    return "generic"


def _get_json(client: httpx.Client, url: str) -> Any:
    try:
        reply = client.get(url)
        return reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
