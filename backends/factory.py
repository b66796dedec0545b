"""The one model factory: builds each role's client from settings, starting the embedded server
when a role's endpoint is `embedded`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from langchain_core.language_models import BaseLanguageModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI, OpenAI

from drpo.backends.errors import CredentialError
from drpo.backends.llm import CallSink, ReplyCache, RoleClient
from drpo.backends.providers import (
    ProviderProfile,
    effective_profile,
    model_options,
    resolve_kind,
    static_kind,
)
from drpo.backends.replicas import Replica, ReplicaBoard, ReplicaPool
from drpo.state.settings import ROLES, RoleName, RoleSettings, Settings

# llama.cpp ignores the key, but the OpenAI client insists on one.
LOCAL_KEY = "sk-local"


class ServerPool(Protocol):
    """Whatever starts local model servers and says where each model is served."""

    def url_for(self, model: str | os.PathLike[str]) -> str:
        """The base URL of the server that holds `model`, starting it if needed."""


def api_key_for(role: str, settings: RoleSettings, environ: Mapping[str, str] | None = None) -> str:
    """Read the role's key from the environment variable it names; the key is never stored."""
    environ = os.environ if environ is None else environ
    if settings.api_key_env is None:
        return LOCAL_KEY
    value = environ.get(settings.api_key_env)
    if not value:
        raise CredentialError(
            f"environment variable {settings.api_key_env} ({role}.api_key_env) is not set"
        )
    return value


def endpoint_identity(settings: RoleSettings) -> str:
    """A stable name for the endpoint, used in cache keys and records.

    The embedded server's port changes every run, so its identity is the model, not the URL.
    """
    if settings.is_embedded:
        return f"embedded:{settings.model_path or settings.model}"
    if settings.endpoints:
        # Whichever replica answers, the reply is the same model's: one identity for all.
        return ",".join(sorted(r.url for r in settings.endpoints))
    return settings.endpoint


def build_langchain_model(
    settings: RoleSettings,
    base_url: str,
    api_key: str,
    model_name: str,
    profile: ProviderProfile | None = None,
) -> BaseLanguageModel[Any]:
    """A LangChain chat or completion model for one endpoint of a role, with its own HTTP client."""
    profile = profile or effective_profile(settings, static_kind(settings))
    common: dict[str, Any] = {
        # A client per model, not LangChain's process-wide one: that one is bound to the first
        # event loop, so a second `optimize()` in the same process would fail.
        "http_async_client": httpx.AsyncClient(timeout=settings.timeout),
        "model": model_name,
        "base_url": base_url,
        "api_key": api_key,
        # Sampling and length as this provider takes them (reasoning models: no temperature).
        **model_options(settings, profile),
        # ChatOpenAI has no timeout by default: a hung server would stall a run forever.
        "timeout": settings.timeout,
        "max_retries": settings.retries,
    }
    if settings.mode == "completion":
        return OpenAI(**common)
    if profile.kind == "azure" and settings.api_version:
        # Azure's classic URLs: /openai/deployments/{model}/chat/completions?api-version=…
        # (without api_version, `endpoint` is Azure's v1 API and ChatOpenAI talks to it).
        del common["base_url"]
        return AzureChatOpenAI(
            **common,
            azure_endpoint=base_url,
            azure_deployment=model_name,
            api_version=settings.api_version,
        )
    return ChatOpenAI(**common)


def build_pool(
    settings: RoleSettings, api_key: str, board: ReplicaBoard, profile: ProviderProfile
) -> ReplicaPool:
    """One client per replica. The SDK does not retry on its own here: a failed request moves
    to another replica at once, and the role's `retries` add attempts after every replica."""
    single = settings.model_copy(update={"retries": 0})
    return ReplicaPool(
        board,
        [
            Replica(
                state=board.state(r.url, r.max_concurrency),
                model=build_langchain_model(single, r.url, api_key, settings.model, profile),
            )
            for r in settings.endpoints
        ],
    )


@dataclass
class RoleModels:
    """The four role clients of a run."""

    clients: dict[RoleName, RoleClient]

    def __getitem__(self, role: RoleName) -> RoleClient:
        return self.clients[role]

    async def aclose(self) -> None:
        """Close every role's HTTP clients (of each replica too)."""
        for client in self.clients.values():
            models = [r.model for r in client.pool.replicas] if client.pool else [client.model]
            for model in models:
                http = getattr(model, "http_async_client", None)
                if isinstance(http, httpx.AsyncClient):
                    await http.aclose()


def build_role_models(
    settings: Settings,
    *,
    pool: ServerPool | None,
    cache: ReplyCache | None,
    sink: CallSink | None,
    run_id: str,
    environ: Mapping[str, str] | None = None,
) -> RoleModels:
    """Every role's client, each over its endpoints, sharing the reply cache and the call sink."""
    clients: dict[RoleName, RoleClient] = {}
    board = ReplicaBoard()
    for role in ROLES:
        role_settings = settings.role(role)
        if role_settings.is_embedded:
            if pool is None:
                raise RuntimeError("an embedded endpoint needs a server pool")
            base_url = pool.url_for(role_settings.model_path or role_settings.model)
            model_name = "local"
        else:
            base_url = role_settings.endpoint
            model_name = role_settings.model
        api_key = api_key_for(role, role_settings, environ)
        profile = effective_profile(role_settings, resolve_kind(role, role_settings, api_key))
        replicas = (
            build_pool(role_settings, api_key, board, profile) if role_settings.endpoints else None
        )
        clients[role] = RoleClient(
            role=role,
            settings=role_settings,
            pool=replicas,
            model=replicas.replicas[0].model
            if replicas
            else build_langchain_model(role_settings, base_url, api_key, model_name, profile),
            profile=profile,
            endpoint_id=endpoint_identity(role_settings),
            cache=cache,
            sink=sink,
            share_cache=settings.cache,
            run_id=run_id,
            # Only the embedded server: its slot count is known, and it is llama.cpp.
            pinned_slots=settings.embedded_slots
            if role_settings.is_embedded and settings.embedded_pin_slots
            else 0,
        )
    return RoleModels(clients)
