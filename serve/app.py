"""Serve the aligned model: an OpenAI-compatible endpoint that applies the optimized prompt.

`create_app` returns a Starlette app that any OpenAI client can use unchanged. For each request
it builds the base model's prompt with `AlignedPrompt.build` — the same `format_base_prompt` and
retriever the search scored prompts with — and forwards it to the base model's endpoint:

- ``POST /v1/chat/completions`` (chat-mode base models), streaming and not. The in-context
  examples are retrieved for the **last user message**. The forwarded conversation is one system
  message — the aligned system prompt, then, if the client sent system (or developer) messages,
  a blank line, the line ``# Additional instructions``, a blank line and the client's system
  texts joined by blank lines — followed by the client's other messages in their order, as
  they were sent. Without a client system message the forwarded system message is byte for
  byte the one the search used.
- ``POST /v1/completions`` (completion-mode base models): the prompt is the query; the base
  model receives the search's completion text and stop sequences (plus the client's own).
- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health`` (never needs the token).

Decoding parameters the client leaves out default to the run's base-model settings (temperature,
top_p, max_tokens, seed), so the served model answers as it did when it was scored. Errors are
OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``). A semaphore bounds the
requests in flight to the base model; the rest wait in line instead of overloading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio.to_thread
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from drpo.backends.factory import LOCAL_KEY, api_key_for
from drpo.backends.retrieval import build_retriever
from drpo.graph.inference import AlignedPrompt
from drpo.prompts.base import BasePrompt
from drpo.state.settings import RoleSettings

DEFAULT_MAX_BODY_BYTES = 1 << 20
# Put between the aligned system prompt and a client's own system message(s).
CLIENT_SYSTEM_MARKER = "\n\n# Additional instructions\n\n"
_SYSTEM_ROLES = frozenset({"system", "developer"})
# Accepted for compatibility with OpenAI clients but meaningless to a base-model server.
_NOT_FORWARDED = frozenset({"model", "metadata", "store", "service_tier"})


# --------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An error reply in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        """The error as an OpenAI-style JSON response."""
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown routes and wrong methods: keep the OpenAI error shape clients know how to read.
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return ApiError(exc.status_code, str(exc.detail), code=code, headers=exc.headers).response()


async def _server_error(request: Request, exc: Exception) -> Response:
    # The details go to the server log (uvicorn prints the traceback), not to the client.
    return ApiError(500, f"internal error ({type(exc).__name__})", type="server_error").response()


# --------------------------------------------------------------------------------------------
# Request bodies


class _Body(BaseModel):
    # A misspelt parameter must be an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class ChatMessage(_Body):
    """One chat message; the fields OpenAI's chat API defines, nothing else."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None


class _Sampling(_Body):
    model: str
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None


class ChatCompletionRequest(_Sampling):
    """An OpenAI chat completions request body."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_Sampling):
    """An OpenAI (legacy) completions request body."""

    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=5)


def _parse(model: type[_Body], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    kind = first["type"]
    location = ".".join(str(part) for part in first["loc"])
    if kind == "json_invalid":
        return ApiError(
            400,
            f"We could not parse the JSON body of your request: {first['msg']}",
            code="invalid_json",
        )
    if kind == "model_type" and not first["loc"]:
        return ApiError(400, "the request body must be a JSON object", code="invalid_json")
    if kind == "extra_forbidden":
        return ApiError(
            400,
            f"Unrecognized request argument supplied: {location}",
            param=location,
            code="unknown_parameter",
        )
    if kind == "missing":
        return ApiError(
            400, f"Missing required parameter: '{location}'.", param=location, code="missing"
        )
    return ApiError(
        400, f"Invalid value for '{location}': {first['msg']}", param=location, code="invalid_value"
    )


# --------------------------------------------------------------------------------------------
# Upstream


@dataclass(frozen=True)
class UpstreamConfig:
    """Where the base model is served, and the decoding the search used with it."""

    base_url: str  # OpenAI-compatible, e.g. "http://127.0.0.1:8080/v1"
    model: str  # the model name the base endpoint expects
    api_key: str = LOCAL_KEY
    timeout: float = 600.0
    # Request fields used when the client does not send them (temperature, top_p, ...).
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_role(
        cls,
        role: RoleSettings,
        *,
        base_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> UpstreamConfig:
        """The base role's endpoint; an embedded role needs the running server's `base_url`.

        Raises CredentialError when the role names an API-key variable that is not set.
        """
        defaults: dict[str, Any] = {
            "temperature": role.temperature,
            "top_p": role.top_p,
            "max_tokens": role.max_tokens,
        }
        if role.seed is not None:
            defaults["seed"] = role.seed
        if role.is_embedded:
            if base_url is None:
                raise ValueError("an embedded base model needs the embedded server's URL")
            # The embedded llama.cpp server serves one model and ignores the name.
            return cls(base_url, "local", LOCAL_KEY, role.timeout, defaults)
        return cls(
            base_url or role.endpoint,
            role.model,
            api_key_for("base", role, environ),
            role.timeout,
            defaults,
        )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _upstream_error(response: aiohttp.ClientResponse, body: bytes) -> ApiError:
    """Map a base-endpoint error to the reply the client gets."""
    try:
        detail = json.loads(body)["error"]
        message = str(detail.get("message") or detail) if isinstance(detail, dict) else str(detail)
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", errors="replace")[:500] or str(response.reason)
    status = response.status
    if status in (401, 403):
        # The client's own token was fine; drpo's credentials for the base model were not.
        return ApiError(
            502,
            f"the base model endpoint rejected drpo's credentials: {message}",
            type="upstream_error",
            code="upstream_auth",
        )
    if status == 429 or 400 <= status < 500:
        headers = {}
        if "retry-after" in response.headers:
            headers["Retry-After"] = response.headers["retry-after"]
        return ApiError(status, message, type="invalid_request_error", headers=headers)
    return ApiError(502, f"base model endpoint error {status}: {message}", type="upstream_error")


def _transport_error(exc: Exception) -> ApiError:
    if isinstance(exc, TimeoutError):
        return ApiError(
            504, "the base model endpoint timed out", type="upstream_error", code="timeout"
        )
    return ApiError(
        502,
        f"cannot reach the base model endpoint: {exc!r}",
        type="upstream_error",
        code="upstream_unavailable",
    )


# --------------------------------------------------------------------------------------------
# Building the forwarded request


def _text_of(content: str | list[dict[str, Any]] | None, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise ApiError(400, f"{where} has no content", param=where)
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(
                400,
                f"{where}: only text content parts are supported, got {part.get('type')!r}",
                param=where,
                code="invalid_value",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def last_user_query(messages: list[ChatMessage]) -> tuple[int, str]:
    """The index and text of the last user message: the examples are retrieved for it."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index, _text_of(messages[index].content, f"messages.{index}.content")
    raise ApiError(
        400,
        "the conversation needs a user message: the examples are retrieved for the last one",
        param="messages",
        code="invalid_value",
    )


def aligned_messages(
    built: BasePrompt, messages: list[ChatMessage], user_index: int
) -> list[dict[str, Any]]:
    """The conversation the base model receives (see the module docstring for the rule)."""
    client_system = [
        _text_of(m.content, f"messages.{i}.content")
        for i, m in enumerate(messages)
        if m.role in _SYSTEM_ROLES
    ]
    system = built.system
    if client_system:
        system += CLIENT_SYSTEM_MARKER + "\n\n".join(client_system)
    forwarded: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for index, message in enumerate(messages):
        if message.role in _SYSTEM_ROLES:
            continue
        dumped = message.model_dump(exclude_unset=True)
        if index == user_index:
            dumped["content"] = built.user
        forwarded.append(dumped)
    return forwarded


def _forwarded_fields(body: _Sampling, defaults: Mapping[str, Any]) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True, exclude_none=True)
    for name in (*_NOT_FORWARDED, "messages", "prompt"):
        fields.pop(name, None)
    # Older OpenAI-compatible servers (and llama.cpp builds) only know max_tokens.
    limit = fields.pop("max_completion_tokens", None)
    if limit is not None and "max_tokens" not in fields:
        fields["max_tokens"] = limit
    return {**defaults, **fields}


def _stops(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------------------------
# The app


class _RelayResponse(StreamingResponse):
    """Relays an upstream SSE stream; closes it and frees the slot however the stream ends.

    Cleanup lives in `__call__` rather than in the body generator: a generator that never
    started (the client left before the first byte) would never run its `finally`.
    """

    def __init__(
        self, upstream: aiohttp.ClientResponse, served_model: str, release: Callable[[], None]
    ) -> None:
        super().__init__(
            self._events(upstream, served_model),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._upstream = upstream
        self._release = release

    @staticmethod
    async def _events(upstream: aiohttp.ClientResponse, served_model: str) -> AsyncIterator[bytes]:
        lines: list[str] = []
        try:
            async for raw in upstream.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line:
                    lines.append(_rename_event_line(line, served_model))
                    continue
                if lines:  # a blank line ends an SSE event: send it in one piece
                    yield ("\n".join(lines) + "\n\n").encode()
                    lines = []
            if lines:
                yield ("\n".join(lines) + "\n\n").encode()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are sent already: report in-band, as OpenAI does ("error" event data).
            error = _transport_error(exc)
            payload = {"error": {"message": error.message, "type": error.type, "code": error.code}}
            yield f"data: {json.dumps(payload)}\n\n".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Returns the connection to the pool, or closes it if the stream was cut short.
            self._upstream.release()
            self._release()


def _rename_event_line(line: str, served_model: str) -> str:
    """Show the served model's name in each chunk, as in non-streamed replies."""
    if not line.startswith("data:"):
        return line
    data = line[5:].strip()
    if not data.startswith("{"):
        return line  # "[DONE]"
    try:
        chunk = json.loads(data)
    except ValueError:
        return line
    if isinstance(chunk, dict) and "model" in chunk:
        chunk["model"] = served_model
        return "data: " + json.dumps(chunk, ensure_ascii=False)
    return line


class _Proxy:
    """The state behind the routes: the aligned prompt, the upstream client and the slots."""

    def __init__(
        self,
        aligned: AlignedPrompt,
        upstream: UpstreamConfig,
        *,
        auth_token: str | None,
        max_concurrency: int,
        max_body_bytes: int,
        served_model: str,
    ) -> None:
        self.aligned = aligned
        self.upstream = upstream
        self.auth_token = auth_token
        self.max_concurrency = max_concurrency
        self.max_body_bytes = max_body_bytes
        self.served_model = served_model
        self.created = int(time.time())
        self.in_flight = 0
        self.waiting = 0
        self.inline_retrieval = False
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # aiohttp rather than httpx.AsyncClient: measured against the stub on this machine, a
        # POST took 3.3 ms with httpx's async client and 0.5 ms with aiohttp (see also
        # encode/httpx#3215), which alone would use most of the 5 ms latency budget.
        connector = aiohttp.TCPConnector(limit=self.max_concurrency)
        async with aiohttp.ClientSession(
            connector=connector,
            headers={"Authorization": f"Bearer {self.upstream.api_key}"},
            # A proxy from the environment must not capture loopback traffic to a local model.
            trust_env=not _is_loopback(self.upstream.base_url),
        ) as session:
            self._session = session
            self._slots = asyncio.Semaphore(self.max_concurrency)
            # Load the retriever (the sentence model, if used) before the first request.
            await anyio.to_thread.run_sync(self.aligned.build, "warm-up")
            retriever = build_retriever(list(self.aligned.examples), self.aligned.retrieval)
            self.inline_retrieval = retriever.kind == "bm25"
            try:
                yield
            finally:
                self._session = None

    # -- helpers ---------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        if self.auth_token is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.auth_token.encode()
        ):
            raise ApiError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <token>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body exceeds the limit of {self.max_body_bytes} bytes",
            code="request_too_large",
        )

    def check_model(self, name: str) -> None:
        if name != self.served_model:
            raise ApiError(
                404,
                f"The model `{name}` does not exist; this server serves `{self.served_model}`.",
                param="model",
                code="model_not_found",
            )

    def check_mode(self, mode: Literal["chat", "completion"], path: str) -> None:
        if self.aligned.mode != mode:
            other = (
                "/v1/completions" if self.aligned.mode == "completion" else "/v1/chat/completions"
            )
            raise ApiError(
                400,
                f"the base model runs in {self.aligned.mode} mode, as it did during the search: "
                f"use {other}, not {path}",
                code="unsupported_endpoint",
            )

    async def build(self, query: str) -> BasePrompt:
        # Sentence-embedding retrieval takes milliseconds of CPU: keep it off the event loop.
        # BM25 over a few dozen examples takes ~0.5 ms, less than the thread hop would cost.
        if self.inline_retrieval:
            return self.aligned.build(query)
        built: BasePrompt = await anyio.to_thread.run_sync(self.aligned.build, query)
        return built

    async def forward(self, path: str, payload: dict[str, Any], stream: bool) -> Response:
        """Send to the base model once a slot is free; relay its reply under the served name."""
        session, slots = self._session, self._slots
        if session is None or slots is None:
            raise ApiError(503, "the server is not ready", type="server_error")
        content = json.dumps(payload, ensure_ascii=False).encode()
        self.waiting += 1
        try:
            await slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1
                slots.release()

        timeout = self.upstream.timeout
        try:
            response = await session.post(
                f"{self.upstream.base_url.rstrip('/')}/{path}",
                data=content,
                headers={"Content-Type": "application/json"},
                # A stream may run long; what must not stall is the gap between its chunks.
                timeout=aiohttp.ClientTimeout(
                    total=None if stream else timeout, sock_connect=timeout, sock_read=timeout
                ),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            release()
            raise _transport_error(exc) from None
        except BaseException:  # cancelled while waiting for the base model
            release()
            raise
        if stream and response.status < 400:
            # The relay owns the slot from here and frees it when the stream ends.
            return _RelayResponse(response, self.served_model, release)
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from None
        finally:
            response.release()
            release()
        if response.status >= 400:
            raise _upstream_error(response, body)
        try:
            reply = json.loads(body)
        except ValueError:
            raise ApiError(
                502, "the base model endpoint sent a reply that is not JSON", type="upstream_error"
            ) from None
        if isinstance(reply, dict):
            reply["model"] = self.served_model
        return JSONResponse(reply)

    # -- routes ----------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        self.authorize(request)
        body: ChatCompletionRequest = _parse(ChatCompletionRequest, await self.read_body(request))
        self.check_model(body.model)
        self.check_mode("chat", "/v1/chat/completions")
        user_index, query = last_user_query(body.messages)
        built = await self.build(query)
        payload = {
            "model": self.upstream.model,
            "messages": aligned_messages(built, body.messages, user_index),
            **_forwarded_fields(body, self.upstream.defaults),
        }
        return await self.forward("chat/completions", payload, bool(body.stream))

    async def completions(self, request: Request) -> Response:
        self.authorize(request)
        body: CompletionRequest = _parse(CompletionRequest, await self.read_body(request))
        self.check_model(body.model)
        self.check_mode("completion", "/v1/completions")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(
                400, "send exactly one prompt per request", param="prompt", code="invalid_value"
            )
        built = await self.build(prompts[0])
        fields = _forwarded_fields(body, self.upstream.defaults)
        # The search's stop sequences keep the model from writing the next "# Query:" itself.
        stop = list(built.stop)
        stop += [s for s in _stops(fields.pop("stop", None)) if s not in stop]
        payload = {"model": self.upstream.model, "prompt": built.text, **fields, "stop": stop}
        return await self.forward("completions", payload, bool(body.stream))

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.served_model,
            "object": "model",
            "created": self.created,
            "owned_by": "drpo",
        }

    async def models(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        self.authorize(request)
        self.check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": self.served_model,
                "mode": self.aligned.mode,
                "in_flight": self.in_flight,
                "waiting": self.waiting,
                "max_concurrency": self.max_concurrency,
            }
        )


def create_app(
    aligned: AlignedPrompt,
    upstream: UpstreamConfig,
    *,
    auth_token: str | None,
    max_concurrency: int,
    max_body_bytes: int,
    served_model: str,
) -> Starlette:
    """Build the ASGI app serving `aligned` on top of the base model at `upstream`."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    proxy = _Proxy(
        aligned,
        upstream,
        auth_token=auth_token or None,
        max_concurrency=max_concurrency,
        max_body_bytes=max_body_bytes,
        served_model=served_model,
    )
    routes = [
        Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/v1/completions", proxy.completions, methods=["POST"]),
        Route("/v1/models", proxy.models, methods=["GET"]),
        Route("/v1/models/{model:path}", proxy.model, methods=["GET"]),
        Route("/health", proxy.health, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=proxy.lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )


# --------------------------------------------------------------------------------------------
# Running it


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen on host:port (0 = a free port) before uvicorn starts, so the URL is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it Nagle + delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """The base URL (``http://HOST:PORT/v1``) of a bound socket."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def uvicorn_config(app: Starlette, *, log_level: str = "warning") -> uvicorn.Config:
    """A uvicorn config for the app, with its lifespan on and a short graceful shutdown."""
    # The app handles its own errors; uvicorn only runs the lifespan and the sockets.
    return uvicorn.Config(app, lifespan="on", log_level=log_level, timeout_graceful_shutdown=5)


class ServerThread:
    """Run an app with uvicorn on a background thread (tests, benchmarks, notebooks).

    `with ServerThread(app) as server:` gives `server.base_url` once requests are accepted.
    """

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = bind_socket(host, port)
        self.base_url = socket_url(self._socket)
        self._server = uvicorn.Server(uvicorn_config(app))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise RuntimeError("the drpo server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self._socket.close()
