"""Serve a deterministic, scriptable OpenAI-compatible API on loopback for tests.

The server uses only the standard library, so it runs both in-process (`StubServer`, a context
manager) and as a separate process that survives a SIGKILLed drpo run:

    python tests/support/stub_server.py --port 0 --script MODULE_OR_FILE:callable \
        --record calls.jsonl --latency 0.05

prints `ready http://127.0.0.1:PORT/v1` on stdout once it accepts connections. `--script` names a
responder (`module:attr` or `path/to/file.py:attr`; append `()` to call a zero-argument factory);
without it the server uses `deterministic_responder()`.

Each request is routed to a role: the `X-Stub-Role` header if present, else the name of a
`json_schema` response format (drpo's "AspectChoice", "Judgement", "PromptProposal",
"ExampleRewrite"), else "json_object" for JSON mode, "base" for chat and "completion" for
/v1/completions. The responder sees a `StubRequest` and returns the reply text, one text per
choice, or a `StubError` for fault tests.

`--provider` (or `StubServer(provider=...)`) makes the stub behave like one real provider
(openai, azure, vllm, llamacpp, ollama, anthropic; rules in provider_rules.py): it refuses what
that provider refuses, with its status and error body, answers its identity probe (`/props`,
`/version`, `/api/version`), and records which fields the provider would have ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import itertools
import json
import math
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from provider_rules import (
    PROVIDERS,
    azure_route,
    check_request,
    honoured_choices,
    ignored_fields,
    probe_reply,
)

STUB_PATH = Path(__file__).resolve()
DEFAULT_MODEL = "stub-model"

# Model calls (recorded, counted and concurrency-tracked) versus probes that are only recorded.
_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_COMPLETION_PATHS = frozenset({"/v1/completions", "/completions"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
_HEALTH_PATHS = frozenset({"/health", "/v1/health"})
# The identity probes drpo sends to tell llama.cpp, vLLM and Ollama apart.
_IDENTITY_PATHS = frozenset({"/props", "/version", "/api/version"})
# What drpo's prompt-only and JSON modes append to the system prompt before the schema.
SCHEMA_IN_PROMPT = "The reply must be one JSON object valid for this JSON schema:\n"
PROBE_ROLES = frozenset({"health", "models"})


class StubError(Exception):
    """An HTTP error reply; a responder may return or raise it."""

    def __init__(
        self,
        status: int,
        body: Mapping[str, Any] | str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"stub HTTP {status}")
        self.status = status
        self.body = body if body is not None else _error_body(status, f"stub error {status}")
        self.retry_after = retry_after


@dataclass(frozen=True)
class StubRequest:
    """One model call as the responder sees it."""

    role: str
    path: str
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    prompt_text: str
    n: int
    # 0-based count of earlier calls with the same role on this server (order-dependent, so the
    # deterministic responder never uses it; scripts use it for "fail the first call" faults).
    call_index: int
    choice_index: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.body.get("model") or DEFAULT_MODEL)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema of a `json_schema` response format, if the request carries one."""
        response_format = self.body.get("response_format")
        if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
            return None
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None

    def text_of(self, message_role: str) -> str:
        """Join the contents of the messages with this chat role ("system", "user", ...)."""
        return "\n".join(
            _content_text(m.get("content")) for m in self.messages if m.get("role") == message_role
        )


Reply = str | list[str] | StubError
Responder = Callable[[StubRequest], Reply]


@dataclass(frozen=True)
class StubCall:
    """The record of one request: what came in and what the stub answered."""

    role: str
    path: str
    body: Any
    time: float
    status: int
    reply: list[str] | None
    error: Any = None
    call_index: int | None = None
    # Fields a provider mode would have silently ignored in this request.
    ignored: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class _Response:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # SSE events to send with chunked encoding instead of a JSON payload.
    events: list[str] | None = None


# --------------------------------------------------------------------------------------------
# Deterministic content


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _rng(*parts: object) -> random.Random:
    # Seeded from sha256 rather than hash(): str hashing is salted per process, and replies must
    # be identical after a crash-and-resume in a new process.
    return random.Random(int.from_bytes(_digest(*parts)[:8], "big"))


def stable_hex(*parts: object, length: int = 8) -> str:
    """Return a short hex tag that depends only on `parts`."""
    return _digest(*parts).hex()[:length]


_SENTENCES = (
    "The short version is that it depends on what you need most.",
    "Here is a clear, step-by-step way to think about it.",
    "First, consider the main constraint and what it rules out.",
    "Second, weigh the trade-offs between speed, cost and reliability.",
    "A concrete example makes the difference easier to see.",
    "Keep in mind that I cannot browse the internet or check real-time data.",
    "If you share more details, I can tailor the advice to your situation.",
    "Most people find that starting small and iterating works best.",
    "The evidence on this is fairly consistent across sources.",
    "One common mistake is to optimise for the wrong goal.",
    "In summary, pick the option that fits your priorities and revisit it later.",
    "Let me know if you would like a deeper explanation of any step.",
)
# Plausible aspect names (all in drpo's catalogue) for string fields called "name".
_NAMES = ("Helpfulness", "Clarity", "Factuality", "Depth", "Engagement", "Conciseness")


def deterministic_text(*seed: object, sentences: tuple[int, int] = (3, 5)) -> str:
    """Return a few sentences of answer-like text that depend only on `seed`."""
    rng = _rng("text", *seed)
    count = rng.randint(*sentences)
    picked = rng.sample(_SENTENCES, count)
    return f"Answer {stable_hex('text', *seed)}: " + " ".join(picked)


def _fit_length(text: str, min_length: int, max_length: int | None, filler: str) -> str:
    while len(text) < min_length:
        text = f"{text} {filler}".strip()
    if max_length is not None and len(text) > max_length:
        text = text[:max_length].rstrip() or text[:max_length]
    return text


def _string_for(key: str, rng: random.Random, seed: str, path: str) -> str:
    tag = stable_hex(seed, path)
    lowered = key.lower()
    # "aspects" is drpo's list of chosen aspect names: plain strings from the catalogue.
    if lowered in {"name", "aspects"}:
        return rng.choice(_NAMES)
    if lowered in {"prompt", "system_prompt"}:
        bullets = rng.sample(_SENTENCES, 3)
        return f"You are a helpful, honest assistant ({tag}).\n" + "\n".join(
            f"- {b}" for b in bullets
        )
    if lowered in {"answer", "text", "content", "response"}:
        return deterministic_text(seed, path)
    words = " ".join(rng.sample(_SENTENCES, 2))
    label = key.replace("_", " ").capitalize() if key else "Value"
    return f"{label} {tag}: {words}"


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """Inline `$ref` (local refs only) and merge `allOf`, so generators see one flat schema."""
    resolved = dict(node)
    seen: set[str] = set()
    while "$ref" in resolved:
        ref = str(resolved.pop("$ref"))
        if ref in seen or not ref.startswith("#/"):
            break
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        # Sibling keywords (description, default) sit next to a $ref; the target wins on type.
        resolved = {**resolved, **target}
    for part in resolved.pop("allOf", []):
        resolved = {**resolved, **_resolve(part, root)}
    return resolved


def _pick_variant(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # Prefer the first non-null alternative: Optional[X] fields get a plausible X, not null.
    for keyword in ("anyOf", "oneOf"):
        variants = schema.get(keyword)
        if variants:
            non_null = [v for v in variants if v.get("type") != "null"]
            chosen: Mapping[str, Any] = (non_null or variants)[0]
            return chosen
    return None


def fake_from_schema(schema: Mapping[str, Any], seed: object) -> Any:
    """Return a value valid against a simple JSON schema, a pure function of (schema, seed).

    Supports objects, arrays, strings, integers, numbers, booleans, null, `enum`/`const`,
    `anyOf`/`oneOf` (first non-null branch), `allOf`, local `$ref` into `$defs`/`definitions`,
    `minimum`/`maximum` (and exclusive forms), `minItems`/`maxItems`, `minLength`/`maxLength`.
    Each value is seeded by its JSON path, so adding a field leaves the other values unchanged.
    Integer or number fields named `score` get 1-5.
    """
    return _fake(schema, schema, str(seed), "$", "")


def _fake(node: Mapping[str, Any], root: Mapping[str, Any], seed: str, path: str, key: str) -> Any:
    schema = _resolve(node, root)
    variant = _pick_variant(schema)
    if variant is not None:
        return _fake(variant, root, seed, path, key)
    rng = _rng(seed, path)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        else:
            kind = "string"
    if kind == "object":
        return {
            name: _fake(sub, root, seed, f"{path}.{name}", name)
            for name, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        # drpo's optional extras (new aspects) stay empty unless a test scripts them.
        if key == "new_aspects" and not schema.get("minItems"):
            return []
        return _fake_array(schema, root, seed, path, key)
    if kind in {"integer", "number"}:
        return _fake_number(schema, kind, key, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    text = _string_for(key, rng, seed, path)
    filler = stable_hex(seed, path, "fill")
    return _fit_length(text, int(schema.get("minLength", 0)), schema.get("maxLength"), filler)


def _fake_array(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    seed: str,
    path: str,
    key: str,
) -> list[Any]:
    prefix = list(schema.get("prefixItems") or [])
    low = int(schema.get("minItems", 0))
    high = max(low, int(schema.get("maxItems", max(low, 2, len(prefix)))))
    # Two items unless the bounds say otherwise: enough to exercise loops over the items,
    # small enough to read in a failing test's output.
    count = min(max(2, low, len(prefix)), high)
    items_schema = schema.get("items") or {}
    values: list[Any] = []
    seen: set[str] = set()
    for index in range(count):
        item_schema = prefix[index] if index < len(prefix) else items_schema
        # Re-draw duplicates a few times, since drpo and `uniqueItems` both expect distinct
        # items; give up rather than loop forever on a tiny enum.
        for attempt in range(8):
            suffix = f"[{index}]" if attempt == 0 else f"[{index}]~{attempt}"
            value = _fake(item_schema, root, seed, path + suffix, key)
            # Objects with a name are distinct when their names are (two "Clarity" aspects with
            # different definitions are still a duplicate to drpo).
            named = isinstance(value, dict) and isinstance(value.get("name"), str)
            marker = value["name"] if named else json.dumps(value, sort_keys=True)
            if marker not in seen:
                break
        seen.add(marker)
        values.append(value)
    return values


def _fake_number(schema: Mapping[str, Any], kind: str, key: str, rng: random.Random) -> int | float:
    is_score = key.lower() == "score" or key.lower().endswith("_score")
    low = float(schema.get("minimum", 1 if is_score else 0))
    high = float(schema.get("maximum", 5 if is_score else low + 9))
    if "exclusiveMinimum" in schema:
        low = max(low, float(schema["exclusiveMinimum"]) + (1 if kind == "integer" else 1e-6))
    if "exclusiveMaximum" in schema:
        high = min(high, float(schema["exclusiveMaximum"]) - (1 if kind == "integer" else 1e-6))
    if is_score:
        low, high = max(low, 1), min(high, 5)
    high = max(low, high)
    if kind == "integer":
        return rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
    return round(rng.uniform(low, high), 3) if high > low else low


def deterministic_responder(
    *, salt: str = "", overrides: Mapping[str, Responder] | None = None
) -> Responder:
    """Build a responder whose replies depend only on the request content, never on call order.

    json_schema requests get `fake_from_schema` output for the schema they carry; JSON mode gets
    a small object; chat and completion calls get `deterministic_text`. `overrides` maps a role
    to a responder that replaces the default for that role; `salt` shifts every reply.
    """
    routes = dict(overrides or {})

    def respond(request: StubRequest) -> Reply:
        custom = routes.get(request.role)
        if custom is not None:
            return custom(request)
        seed = (salt, request.choice_index, request.prompt_text)
        schema = request.schema
        if schema is not None:
            return json.dumps(fake_from_schema(schema, "\x1f".join(map(str, seed))))
        in_prompt = schema_in_prompt(request.text_of("system"))
        if in_prompt is not None:
            # Prompt-only JSON: prose around the object, as chat models tend to write it.
            value = json.dumps(fake_from_schema(in_prompt, "\x1f".join(map(str, seed))))
            return f"Here is the JSON you asked for:\n{value}\nLet me know if you need more."
        if request.role == "json_object":
            return json.dumps({"result": deterministic_text(*seed)})
        return deterministic_text(*seed)

    return respond


def schema_in_prompt(system: str) -> dict[str, Any] | None:
    """The JSON schema drpo put in a system prompt (prompt-only / JSON mode), if any."""
    start = system.find(SCHEMA_IN_PROMPT)
    if start == -1:
        return None
    try:
        schema, _ = json.JSONDecoder().raw_decode(system[start + len(SCHEMA_IN_PROMPT) :])
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


# --------------------------------------------------------------------------------------------
# Request parsing and response building


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _tokens(text: str) -> int:
    return len(text.split())


def _error_body(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "server_error" if status >= 500 else "api_error"),
            "code": status,
        }
    }


def _route(path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    explicit = headers.get("x-stub-role")
    if explicit:
        return explicit
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            name = (response_format.get("json_schema") or {}).get("name")
            if name:
                return str(name)
        if response_format.get("type") == "json_object":
            return "json_object"
    return "completion" if path in _COMPLETION_PATHS else "base"


def _chunks(text: str, words_per_chunk: int = 3) -> Iterator[str]:
    pieces = re.findall(r"\s*\S+", text) or [text]
    for start in range(0, len(pieces), words_per_chunk):
        yield "".join(pieces[start : start + words_per_chunk])


# --------------------------------------------------------------------------------------------
# The server


class _HTTPServer(ThreadingHTTPServer):
    # The default backlog of 5 makes concurrent clients hit SYN retries (1 s stalls), which
    # would distort the performance tests' timings.
    request_queue_size = 256
    daemon_threads = True

    def __init__(self, address: tuple[str, int], stub: StubServer) -> None:
        self.stub = stub
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the kill/resume tests and benchmarks do it on purpose)
        # leaves a broken pipe or reset here; a traceback per connection buries real output.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint behind an httpx pool
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def setup(self) -> None:
        super().setup()
        self.server.stub._track_connection(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.stub._track_connection(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.stub.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._send(self.server.stub._handle_get(self.path.split("?", 1)[0].rstrip("/")))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        stub = self.server.stub
        path, refusal = azure_route(self.path)
        if refusal is not None and stub.provider == "azure":
            self._send(_Response(refusal.status, refusal.body))
            return
        if stub.provider != "azure":
            path = self.path.split("?", 1)[0].rstrip("/")
        stub._enter()
        try:
            self._send(stub._handle_post(path, headers, raw))
        finally:
            stub._leave()

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.events is None:
            data = json.dumps(response.payload).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in response.events:
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


class StubServer:
    """A deterministic OpenAI-compatible server on 127.0.0.1, started as a context manager.

    `with StubServer(responder) as stub:` gives `stub.base_url` ("http://127.0.0.1:PORT/v1"),
    `stub.requests`, `stub.count(role)` and `stub.peak_concurrency`. `latency` seconds are slept
    per model call to imitate a real model; `record` appends every call to a JSON-lines file.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        record: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = (DEFAULT_MODEL,),
        verbose: bool = False,
        provider: str | None = None,
    ) -> None:
        self._responder = responder or deterministic_responder()
        self.provider = provider
        # Identity probes, kept apart from `requests` so call counts stay model calls.
        self.probes: list[str] = []
        self.latency = latency
        self.record_path = Path(record) if record is not None else None
        self.models = tuple(models)
        self.verbose = verbose
        self._address = (host, port)
        self._lock = threading.Lock()
        self._calls: list[StubCall] = []
        self._errors: list[str] = []
        self._role_counters: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._in_flight = 0
        self._peak = 0
        self._connections: set[socket.socket] = set()
        self._record_file: IO[str] | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port and serve on a background thread."""
        self._bind()
        assert self._httpd is not None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind the port and serve on the calling thread until interrupted (the CLI mode).

        `on_ready` gets the base URL once the socket listens, before the first request.
        """
        self._bind()
        assert self._httpd is not None
        try:
            if on_ready is not None:
                on_ready(self.base_url)
            self._httpd.serve_forever(poll_interval=0.05)
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, drop idle keep-alive connections and close the record file."""
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("StubServer is already running")
        if self.record_path is not None:
            self._record_file = self.record_path.open("a", encoding="utf-8")
        self._httpd = _HTTPServer(self._address, self)

    def _close(self) -> None:
        httpd, self._httpd, self._thread = self._httpd, None, None
        if httpd is not None:
            httpd.server_close()
        # Handler threads of idle keep-alive connections would otherwise keep answering
        # pooled clients after the test that owned the server has finished.
        with self._lock:
            connections, self._connections = list(self._connections), set()
            record_file, self._record_file = self._record_file, None
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        if record_file is not None:
            record_file.close()

    # -- public state ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("StubServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = self._address[0]
        return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{self.port}/v1"

    @property
    def requests(self) -> list[StubCall]:
        """A snapshot of every request so far, in the order their replies were decided."""
        with self._lock:
            return list(self._calls)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of responder exceptions (each answered with HTTP 500)."""
        with self._lock:
            return list(self._errors)

    @property
    def peak_concurrency(self) -> int:
        """The largest number of model calls that were in flight at the same time."""
        with self._lock:
            return self._peak

    def count(self, *roles: str) -> int:
        """Count model calls with any of `roles`; with none given, count every model call.

        Health and model-list probes are recorded but never counted without naming their role.
        """
        with self._lock:
            if roles:
                return sum(1 for call in self._calls if call.role in roles)
            return sum(1 for call in self._calls if call.role not in PROBE_ROLES)

    def calls(self, role: str) -> list[StubCall]:
        """Return the recorded calls with this role."""
        with self._lock:
            return [call for call in self._calls if call.role == role]

    def set_responder(self, responder: Responder) -> None:
        self._responder = responder

    def reset(self) -> None:
        """Forget recorded calls, errors, per-role call indexes and the concurrency peak."""
        with self._lock:
            self._calls.clear()
            self._errors.clear()
            self._role_counters.clear()
            self._peak = self._in_flight

    # -- request handling ------------------------------------------------------------------

    def _track_connection(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, call: StubCall) -> None:
        with self._lock:
            self._calls.append(call)
            if self._record_file is not None:
                # One line per call, flushed at once, so another process can count calls even
                # if this one is killed right after.
                self._record_file.write(call.to_json() + "\n")
                self._record_file.flush()

    def _handle_get(self, path: str) -> _Response:
        started = time.time()
        if path in _HEALTH_PATHS:
            role, response = "health", _Response(200, {"status": "ok"})
        elif path in _IDENTITY_PATHS:
            with self._lock:
                self.probes.append(path)
            reply = probe_reply(self.provider, path)
            if reply is None:
                return _Response(404, _error_body(404, f"no route GET {path}"))
            return _Response(200, reply)
        elif path in _MODELS_PATHS:
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in self.models
            ]
            role, response = "models", _Response(200, {"object": "list", "data": data})
        else:
            role, response = "unknown", _Response(404, _error_body(404, f"no route GET {path}"))
        self._record(StubCall(role, path, None, started, response.status, None, None))
        return response

    def _handle_post(self, path: str, headers: Mapping[str, str], raw: bytes) -> _Response:
        started = time.time()
        if path not in _CHAT_PATHS and path not in _COMPLETION_PATHS:
            response = _Response(404, _error_body(404, f"no route POST {path}"))
            self._record(StubCall("unknown", path, None, started, 404, None, response.payload))
            return response
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
        except ValueError as exc:
            response = _Response(400, _error_body(400, f"invalid JSON body: {exc}"))
            self._record(StubCall("invalid", path, None, started, 400, None, response.payload))
            return response

        role = _route(path, body, headers)
        with self._lock:
            call_index = self._role_counters.get(role, 0)
            self._role_counters[role] = call_index + 1
        if self.latency > 0:
            time.sleep(self.latency)

        ignored: list[str] = []
        if self.provider is not None:
            refusal = check_request(self.provider, body)
            if refusal is not None:
                self._record(
                    StubCall(role, path, body, started, refusal.status, None, refusal.body)
                )
                return _Response(refusal.status, refusal.body)
            ignored = ignored_fields(self.provider, body)
        request = self._build_request(role, path, body, headers, call_index)
        if request is not None and self.provider is not None:
            request = replace(request, n=honoured_choices(self.provider, request.n))
        if request is None:
            message = "'messages' is required" if path in _CHAT_PATHS else "'prompt' is required"
            response = _Response(400, _error_body(400, message))
            self._record(
                StubCall(role, path, body, started, 400, None, response.payload, call_index)
            )
            return response

        outcome = self._ask(request)
        if isinstance(outcome, StubError):
            error_headers = {}
            if outcome.retry_after is not None:
                seconds = outcome.retry_after
                error_headers["Retry-After"] = (
                    str(int(seconds)) if float(seconds).is_integer() else str(seconds)
                )
            self._record(
                StubCall(role, path, body, started, outcome.status, None, outcome.body, call_index)
            )
            return _Response(outcome.status, outcome.body, error_headers)

        self._record(StubCall(role, path, body, started, 200, outcome, None, call_index, ignored))
        return self._reply(request, outcome)

    def _build_request(
        self,
        role: str,
        path: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        call_index: int,
    ) -> StubRequest | None:
        if path in _CHAT_PATHS:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return None
            prompt_text = "\n".join(
                _content_text(m.get("content")) for m in messages if isinstance(m, dict)
            )
        else:
            prompt = body.get("prompt")
            if prompt is None:
                return None
            messages = []
            prompt_text = prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))
        return StubRequest(
            role=role,
            path=path,
            body=body,
            messages=messages,
            prompt_text=prompt_text,
            n=max(1, int(body.get("n") or 1)),
            call_index=call_index,
            headers=dict(headers),
        )

    def _ask(self, request: StubRequest) -> list[str] | StubError:
        """Get one text per choice from the responder, or the error to send instead."""
        responder = self._responder
        try:
            first = responder(request)
            if isinstance(first, StubError | list):
                return first if isinstance(first, StubError) else [str(t) for t in first]
            if not isinstance(first, str):
                raise TypeError(f"responder returned {type(first).__name__}, expected str")
            texts = [first]
            for index in range(1, request.n):
                more = responder(replace(request, choice_index=index))
                if isinstance(more, StubError):
                    return more
                if not isinstance(more, str):
                    raise TypeError(f"responder returned {type(more).__name__} for a choice")
                texts.append(more)
            return texts
        except StubError as error:
            return error
        except Exception as exc:  # a script bug must surface as a loud 500, not a hang
            trace = traceback.format_exc()
            with self._lock:
                self._errors.append(trace)
            if self.verbose:
                print(trace, file=sys.stderr)
            return StubError(500, _error_body(500, f"responder failed: {exc!r}"))

    def _reply(self, request: StubRequest, texts: list[str]) -> _Response:
        chat = request.path in _CHAT_PATHS
        completion_tokens = sum(_tokens(t) for t in texts)
        prompt_tokens = _tokens(request.prompt_text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-stub-{next(self._ids)}",
            "created": int(time.time()),
            "model": request.model,
        }
        if request.body.get("stream"):
            return _Response(200, events=self._stream_events(request, texts, head, usage, chat))
        if chat:
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i, text in enumerate(texts)
            ]
            return _Response(
                200, {**head, "object": "chat.completion", "choices": choices, "usage": usage}
            )
        choices = [
            {"index": i, "text": text, "finish_reason": "stop", "logprobs": None}
            for i, text in enumerate(texts)
        ]
        return _Response(
            200, {**head, "object": "text_completion", "choices": choices, "usage": usage}
        )

    @staticmethod
    def _stream_events(
        request: StubRequest,
        texts: list[str],
        head: dict[str, Any],
        usage: dict[str, int],
        chat: bool,
    ) -> list[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            return json.dumps({**head, "object": obj, "choices": choices, **extra})

        events: list[str] = []
        for i, text in enumerate(texts):
            if chat:
                events.append(
                    event(
                        [
                            {
                                "index": i,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                            }
                        ]
                    )
                )
            for piece in _chunks(text):
                delta: dict[str, Any] = {"delta": {"content": piece}} if chat else {"text": piece}
                events.append(event([{"index": i, **delta, "finish_reason": None}]))
            done: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
            events.append(event([{"index": i, **done, "finish_reason": "stop"}]))
        stream_options = request.body.get("stream_options") or {}
        if stream_options.get("include_usage"):
            events.append(event([], usage=usage))
        events.append("[DONE]")
        return events


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read the calls a (possibly other-process) stub appended to a `--record` file."""
    file = Path(path)
    if not file.exists():
        return []
    lines = file.read_text(encoding="utf-8").split("\n")
    # The last element is "" after a complete line, or a line the stub is still writing: a
    # reader polling the file while another process appends must not parse half a record.
    return [json.loads(line) for line in lines[:-1] if line]


def count_records(path: str | Path, *roles: str) -> int:
    """Count recorded model calls with any of `roles` (every model call when none is given)."""
    records = load_records(path)
    if roles:
        return sum(1 for r in records if r["role"] in roles)
    return sum(1 for r in records if r["role"] not in PROBE_ROLES)


# --------------------------------------------------------------------------------------------
# Separate-process mode


def load_responder(spec: str) -> Responder:
    """Resolve `module:attr` or `path/file.py:attr`; a trailing `()` calls a factory."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"--script must look like MODULE_OR_FILE:callable, got {spec!r}")
    call_factory = attr.endswith("()")
    attr = attr.removesuffix("()")
    if target.endswith(".py") or "/" in target:
        file = Path(target).resolve()
        module_spec = importlib.util.spec_from_file_location(f"_stub_script_{file.stem}", file)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    obj = getattr(module, attr)
    responder: Responder = obj() if call_factory else obj
    return responder


class StubProcess:
    """Run the stub as a child process (for tests that SIGKILL drpo), as a context manager.

    `record` defaults to no file; pass one to count calls with `count_records`.
    """

    def __init__(
        self,
        script: str | None = None,
        *,
        record: str | Path | None = None,
        latency: float = 0.0,
        startup_timeout: float = 20.0,
    ) -> None:
        self.args = [sys.executable, str(STUB_PATH), "--port", "0", "--latency", str(latency)]
        if script is not None:
            self.args += ["--script", script]
        if record is not None:
            self.args += ["--record", str(record)]
        self.record = Path(record) if record is not None else None
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], self.startup_timeout)
        line = self.process.stdout.readline().strip() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"stub process did not start (got {line!r})")
        self.base_url = line.split(" ", 1)[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def count(self, *roles: str) -> int:
        if self.record is None:
            raise RuntimeError("StubProcess was started without a record file")
        return count_records(self.record, *roles)

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stub in the foreground and print its base URL once it accepts connections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="MODULE_OR_FILE:callable responder ('()' = factory)")
    parser.add_argument("--record", type=Path, help="append every call to this JSON-lines file")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept per call")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    parser.add_argument(
        "--provider", choices=PROVIDERS, help="behave like this provider (see provider_rules.py)"
    )
    args = parser.parse_args(argv)

    responder = load_responder(args.script) if args.script else deterministic_responder()
    stub = StubServer(
        responder,
        latency=args.latency,
        record=args.record,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
        provider=args.provider,
    )

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    with contextlib.suppress(KeyboardInterrupt):
        stub.serve_forever(on_ready=lambda url: print(f"ready {url}", flush=True))
    return 0


if __name__ == "__main__":
    # Re-import under the module name so that scripts doing `from stub_server import StubError`
    # share the classes the server checks with isinstance (not a second `__main__` copy).
    import stub_server

    raise SystemExit(stub_server.main())
