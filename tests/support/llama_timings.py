"""A stand-in for llama.cpp's native `/completion` endpoint that answers with scripted `timings`.

Each request gets the next step of the script (the last one repeats): `(prompt_ms, predicted_ms)`
for 60 prompt tokens and 8 decoded, `None` to never answer in time, or `"error"` for HTTP 500.
The request bodies are kept in `bodies`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

Step = tuple[float, float] | str | None


class _Handler(BaseHTTPRequestHandler):
    server: LlamaTimingsServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        step = self.server.next_step(body)
        if step is None:
            time.sleep(5)
            return
        if isinstance(step, str):
            self.send_response(500)
            self.end_headers()
            return
        prompt_ms, predicted_ms = step
        timings = {"prompt_n": 60, "prompt_ms": prompt_ms}
        timings |= {"predicted_n": 8, "predicted_ms": predicted_ms}
        data = json.dumps({"content": "x", "timings": timings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LlamaTimingsServer(ThreadingHTTPServer):
    """The server, on a free loopback port, as a context manager; `root` is its URL."""

    # A request left hanging must not hold up the test's exit.
    daemon_threads = True
    block_on_close = False

    def __init__(self, script: list[Step]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.root = f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def asked(self) -> int:
        """Requests received so far."""
        return len(self.bodies)

    def next_step(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.bodies.append(body)
            return self.script[min(len(self.bodies), len(self.script)) - 1]

    def __enter__(self) -> Self:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()
