"""A fault-injecting HTTP proxy for tests: sits on loopback between drpo and the stub server.

    with FaultProxy(stub.base_url, rate=0.2, seed=7) as proxy:
        ... point a role's endpoint at proxy.base_url ...
        proxy.events  # one FaultEvent per request: what was injected, when, which attempt

Each model call (POST) is either forwarded unchanged or answered with a fault:

- `429`: Too Many Requests with `Retry-After` (seconds, `retry_after`);
- `500`, `503`: server errors;
- `hang`: no reply for `hang_seconds` (set it past the client's timeout), then the connection
  is dropped;
- `reset`: the connection is reset (RST) once the request has been read;
- `truncate`: the upstream reply is cut in half mid-body and the connection closed, so fewer
  bytes arrive than `Content-Length` announced;
- `cut-json`: a complete HTTP reply whose JSON body is cut in half (Content-Length matches);
- `schema`: a well-formed reply whose message is JSON that breaks the requested schema (only
  for structured requests, those with a `response_format`).

The decision is a pure function of (seed, request body, how many times this exact body was seen
before), so it does not depend on the order in which concurrent calls arrive, and a retried
request gets a fresh draw (with `rotate`, the kinds of fault take turns instead, so that every
kind occurs in a short run). GET requests (the `/models` probe) pass through unless `faulty_gets`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

FAULTS = ("429", "500", "503", "hang", "reset", "truncate", "cut-json", "schema")
# Replies that no drpo reply schema accepts: required fields missing, or wrong types throughout.
SCHEMA_BREAKERS = (
    {"unexpected": "ignore the schema"},
    {"scores": "five", "aspects": 5, "analysis": 5, "prompt": 5, "answer": 5},
    [1, 2, 3],
)


@dataclass(frozen=True)
class FaultRequest:
    """What a fault chooser sees of a request."""

    method: str
    path: str
    body: bytes
    digest: str  # sha256 of method, path and body
    attempt: int  # earlier requests with the same digest
    structured: bool  # a JSON reply with a response_format was requested

    @property
    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class FaultEvent:
    """One request the proxy handled: the fault injected (or None) and when."""

    time: float  # time.monotonic() when the request was read
    method: str
    path: str
    digest: str
    attempt: int
    fault: str | None
    role: str


Chooser = Callable[[FaultRequest], str | None]


def seeded_chooser(
    rate: float,
    seed: int,
    faults: Sequence[str] = FAULTS,
    *,
    rotate: bool = False,
    faulty_gets: bool = False,
) -> Chooser:
    """Inject one of `faults` into a `rate` fraction of requests, seeded per body and attempt.

    Which requests fail is always a pure function of (seed, body, attempt). The kind of fault
    is too, unless `rotate`: then the kinds take turns in the order faults are injected, so a
    short run still meets every kind (at the price of the kind depending on arrival order).
    """
    lock = threading.Lock()
    # Kinds not yet injected in this round; a kind the request cannot take (a schema break on
    # a plain-text request) keeps its place for the next request that can, so the arrival
    # order of requests never starves it.
    pending: list[str] = []

    def choose(request: FaultRequest) -> str | None:
        if request.method != "POST" and not faulty_gets:
            return None
        rng = random.Random(f"{seed}/{request.digest}/{request.attempt}")
        if rng.random() >= rate:
            return None
        usable = [f for f in faults if f != "schema" or request.structured]
        if not usable:
            return None
        if not rotate:
            return rng.choice(usable)
        with lock:
            if not pending:
                pending.extend(faults)
            for fault in pending:
                if fault in usable:
                    pending.remove(fault)
                    return fault
        return rng.choice(usable)

    return choose


def first_attempt(fault: str) -> Chooser:
    """Inject `fault` into the first attempt of every model call; retries go through."""
    return lambda request: fault if request.method == "POST" and request.attempt == 0 else None


def _role_of(request: FaultRequest) -> str:
    response_format = request.json.get("response_format")
    if isinstance(response_format, dict):
        name = (response_format.get("json_schema") or {}).get("name")
        return str(name or response_format.get("type") or "json")
    return "base" if request.method == "POST" else request.path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def drop_connections(self) -> None:
        """Close kept-alive client connections, which would otherwise outlive `shutdown()`."""
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the events list is the log."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy = self.server.proxy
        fault, request = proxy._decide(self.command, self.path, body)
        if fault in ("429", "500", "503"):
            status = int(fault)
            headers = {"Retry-After": _seconds(proxy.retry_after)} if status == 429 else {}
            payload = {"error": {"message": f"injected {status}", "type": "server_error"}}
            self._reply(status, json.dumps(payload).encode(), headers)
            return
        if fault == "hang":
            time.sleep(proxy.hang_seconds)
            self._drop(reset=False)
            return
        if fault == "reset":
            self._drop(reset=True)
            return
        try:
            status, content_type, data = proxy._forward(self.command, self.path, body, self.headers)
        except OSError as exc:  # the upstream is down: answer like a gateway would
            payload = {"error": {"message": f"upstream unreachable: {exc}", "type": "proxy"}}
            self._reply(502, json.dumps(payload).encode(), {})
            return
        if fault == "truncate":
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._drop(reset=False)
            return
        if fault == "cut-json":
            data = data[: len(data) // 2]
        elif fault == "schema" and request.structured and status == 200:
            data = _break_schema(data, request.digest)
        self._reply(status, data, {"Content-Type": content_type})

    def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self, *, reset: bool) -> None:
        """Close the connection without (the rest of) a reply; with `reset`, send a RST."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.connection.close()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _break_schema(data: bytes, digest: str) -> bytes:
    """Replace each choice's content with JSON that the requested schema rejects."""
    try:
        payload = json.loads(data)
        breaker = SCHEMA_BREAKERS[int(digest[:8], 16) % len(SCHEMA_BREAKERS)]
        for choice in payload.get("choices", []):
            if isinstance(choice.get("message"), dict):
                choice["message"]["content"] = json.dumps(breaker)
            elif "text" in choice:
                choice["text"] = json.dumps(breaker)
        return json.dumps(payload).encode()
    except (ValueError, AttributeError, TypeError):
        return data


class FaultProxy:
    """A loopback proxy that injects faults into the requests it forwards to `upstream`."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.2,
        seed: int = 0,
        faults: Sequence[str] = FAULTS,
        rotate: bool = False,
        chooser: Chooser | None = None,
        retry_after: float = 1.0,
        hang_seconds: float = 3.0,
        port: int = 0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy only forwards to loopback")
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.chooser = chooser or seeded_chooser(rate, seed, faults, rotate=rotate)
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self._port = port
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._events: list[FaultEvent] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on 127.0.0.1 (the given port, or a free one) and serve on a thread."""
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused, as from a server that went down."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    def injected(self) -> dict[str, int]:
        """How many times each fault was injected."""
        counts: dict[str, int] = {}
        for event in self.events:
            if event.fault is not None:
                counts[event.fault] = counts.get(event.fault, 0) + 1
        return counts

    # ---- request handling -----------------------------------------------------------------

    def _decide(self, method: str, path: str, body: bytes) -> tuple[str | None, FaultRequest]:
        digest = hashlib.sha256(b"\x1f".join([method.encode(), path.encode(), body])).hexdigest()
        with self._lock:
            attempt = self._attempts.get(digest, 0)
            self._attempts[digest] = attempt + 1
        try:
            structured = bool(json.loads(body or b"{}").get("response_format"))
        except (ValueError, AttributeError):
            structured = False
        request = FaultRequest(method, path, body, digest, attempt, structured)
        fault = self.chooser(request)
        event = FaultEvent(
            time.monotonic(), method, path, digest, attempt, fault, _role_of(request)
        )
        with self._lock:
            self._events.append(event)
        return fault, request

    def _forward(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            forwarded = {
                name: headers[name]
                for name in ("Content-Type", "Authorization", "X-Stub-Role")
                if headers.get(name) is not None
            }
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheader("Content-Type", "application/json"), data
        finally:
            connection.close()
