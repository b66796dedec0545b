"""The start-up speed is the fastest of a few spaced probes, so a moment's load does not decide it.

A default run started while a short command took a core was probed at 11 tok/s prefill where the
idle machine gives 55–60, and its search was cut to the smallest; a busy machine stays slow in
every try.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from drpo.backends.speed_probe import ProbeFailed, ServerSpeed, measure_server_speed


class _Timings(BaseHTTPRequestHandler):
    """Replies with the next of the server's `timings` (prompt ms for 60 tokens, decode ms for 8);
    None: never answers in time; "error": HTTP 500."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        step = server.script[min(server.asked, len(server.script) - 1)]
        server.asked += 1
        if step is None:
            time.sleep(5)
            return
        if step == "error":
            self.send_response(500)
            self.end_headers()
            return
        prompt_ms, predicted_ms = step
        timings = {
            "prompt_n": 60,
            "prompt_ms": prompt_ms,
            "predicted_n": 8,
            "predicted_ms": predicted_ms,
        }
        data = json.dumps({"content": "x", "timings": timings}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def llama() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Timings)
    server.asked = 0
    server.script = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.root = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_a_moments_load_in_one_try_does_not_decide_the_speed(llama: Any) -> None:
    llama.script = [(6000.0, 2000.0), (1000.0, 500.0), (1500.0, 800.0)]
    speed = measure_server_speed(llama.root, budget=5, pause=0.01)
    assert speed == ServerSpeed(prefill_per_second=60.0, decode_per_second=16.0)
    assert llama.asked == 3


def test_a_busy_machine_stays_slow_in_every_try(llama: Any) -> None:
    llama.script = [(6000.0, 2000.0)]
    assert measure_server_speed(llama.root, budget=5, pause=0.01) == ServerSpeed(10.0, 4.0)
    assert llama.asked == 3


def test_a_later_try_that_fails_or_hangs_keeps_the_tries_before_within_the_budget(
    llama: Any,
) -> None:
    llama.script = [(3000.0, 1000.0), "error"]
    assert measure_server_speed(llama.root, budget=5, pause=0.01) == ServerSpeed(20.0, 8.0)
    llama.asked = 0
    llama.script = [(3000.0, 1000.0), None]
    started = time.monotonic()
    assert measure_server_speed(llama.root, budget=1.5, pause=0.01) == ServerSpeed(20.0, 8.0)
    assert time.monotonic() - started < 2.5


def test_the_first_try_failing_fails_the_measurement_in_one_line(llama: Any) -> None:
    llama.script = ["error"]
    with pytest.raises(ProbeFailed, match="HTTP 500") as failure:
        measure_server_speed(llama.root, budget=5, pause=0.01)
    assert "\n" not in str(failure.value)
