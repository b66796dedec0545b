"""The start-up speed probe, the ETA clock and the off-terminal status lines."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from stub_server import StubServer

from drpo.backends.speed_probe import ProbeFailed, ServerSpeed, probe_speed
from drpo.cli import progress as cli_progress
from drpo.cli.progress import ProgressPrinter, time_forecast
from drpo.graph.api import measure_speed
from drpo.nodes.estimate import Estimate, RoleEstimate
from drpo.nodes.eta import RunClock
from drpo.state.events import (
    CallFinished,
    ReviewNeeded,
    RunStarted,
    RunWarning,
    SpeedMeasured,
    StepFinished,
)


class _LlamaTimings(BaseHTTPRequestHandler):
    """llama.cpp's native /completion reply: 60 prompt tokens in 3 s, 8 tokens in 1 s."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.bodies.append(json.loads(self.rfile.read(length)))  # type: ignore[attr-defined]
        timings = {"prompt_n": 60, "prompt_ms": 3000.0, "predicted_n": 8, "predicted_ms": 1000.0}
        data = json.dumps({"content": "x", "timings": timings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def llama_root() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LlamaTimings)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.bodies  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_the_probe_reads_the_servers_own_timings_with_the_prompt_cache_off(
    llama_root: tuple[str, list[dict[str, Any]]],
) -> None:
    root, bodies = llama_root
    speed = probe_speed(root)
    assert speed == ServerSpeed(prefill_per_second=20.0, decode_per_second=8.0)
    assert bodies[0]["cache_prompt"] is False and bodies[0]["ignore_eos"] is True


def test_a_probe_answered_with_an_error_fails_in_one_line() -> None:
    # An OpenAI-only server: no llama.cpp /completion route.
    with StubServer() as stub, pytest.raises(ProbeFailed, match="speed probe failed") as failure:
        probe_speed(stub.base_url.removesuffix("/v1"))
    assert "\n" not in str(failure.value)


def test_a_probe_that_hangs_gives_up_at_its_timeout() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(ProbeFailed, match=r"over 0\.5 s"):
            probe_speed(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    assert time.monotonic() - started < 3


class _FakeServer:
    def __init__(self, root_url: str) -> None:
        self.root_url = root_url


class _FakePool:
    def __init__(self, root_url: str) -> None:
        self.servers = {Path("/models/qwen.gguf"): _FakeServer(root_url)}


def test_a_failed_probe_is_one_warning_and_the_printer_goes_on_without_an_eta(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with StubServer() as stub:
        events = measure_speed(_FakePool(stub.base_url.removesuffix("/v1")))  # type: ignore[arg-type]
    assert len(events) == 1 and isinstance(events[0], RunWarning)
    assert events[0].message.startswith("no time estimate: ")
    with ProgressPrinter(tmp_path / "absent.db", estimate=_estimate()) as printer:
        printer(RunStarted(run_id="r1", store="s"))
        printer(events[0])
        assert printer.status().endswith("ETA: no time estimate yet")
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "no time estimate" in err


def test_a_measured_probe_is_reported_as_an_event(
    llama_root: tuple[str, list[dict[str, Any]]],
) -> None:
    (event,) = measure_speed(_FakePool(llama_root[0]))  # type: ignore[arg-type]
    assert event == SpeedMeasured(model="qwen.gguf", prefill_per_second=20.0, decode_per_second=8.0)


def _estimate(**roles: tuple[int, int, int]) -> Estimate:
    estimate = Estimate()
    for role, (calls, prompt, completion) in (roles or {"judge": (10, 7000, 800)}).items():
        estimate.roles[role] = RoleEstimate(calls, prompt, completion)  # type: ignore[index]
    return estimate


def test_the_forecast_before_the_run_uses_the_probe_and_names_faster_choices_when_long() -> None:
    # 10 judge calls of 700 prompt + 80 completion tokens at 20 and 8 tok/s: 10 × 45 s = 7.5 min.
    assert RunClock.before_start(_estimate(), ServerSpeed(20.0, 8.0)) == pytest.approx(450)
    short = time_forecast(_estimate(), ServerSpeed(20.0, 8.0))
    assert "about 8 min on this machine" in short and "--preset quick" not in short
    slow = time_forecast(_estimate(), ServerSpeed(2.0, 1.0))  # 10 × 430 s
    assert "about 1 h 12 min" in slow and "--preset quick" in slow and "base.model" in slow
    already_quick = time_forecast(_estimate(), ServerSpeed(2.0, 1.0), preset="quick")
    assert "--preset quick" not in already_quick and "base.model" in already_quick


def _call(role: str, prompt: int, completion: int, seconds: float, cached: int = 0) -> CallFinished:
    return CallFinished(
        role=role,
        model="m",
        endpoint="e",
        outcome="ok",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        seconds=seconds,
    )


def test_the_clock_fits_seconds_per_prompt_and_completion_token_from_the_calls() -> None:
    # A server at 0.05 s per processed prompt token and 0.2 s per completion token.
    clock = RunClock(_estimate(judge=(4, 2800, 320), base=(4, 1200, 800)))
    mixes = [(700, 50, 100), (400, 90, 0), (900, 30, 300)]
    for prompt, completion, cached in mixes:
        seconds = 0.05 * (prompt - cached) + 0.2 * completion
        clock.call_finished(_call("judge", prompt, completion, seconds, cached), now=seconds)
    fit = clock.fits[("judge", "e")]
    assert fit.rates(6.0) == pytest.approx((0.05, 0.2))
    # No base call yet: the base role's estimated tokens (300 + 200 per call) at the fitted rates.
    per_base_call = 0.05 * 300 + 0.2 * 200
    per_judge_call = fit.seconds / fit.calls
    remaining = clock.remaining(now=fit.seconds)  # the calls so far ran one after another
    assert remaining == pytest.approx(4 * per_base_call + 1 * per_judge_call)


def test_the_clock_divides_the_remaining_work_by_the_concurrency_seen_so_far() -> None:
    clock = RunClock(_estimate(judge=(6, 4200, 480)))
    for _ in range(3):  # three 10-second calls side by side, all done 10 s after the first began
        clock.call_finished(_call("judge", 700, 80, 10.0), now=10.0)
    assert clock.remaining(now=10.0) == pytest.approx(3 * 10.0 / 3)


def test_off_a_terminal_a_status_line_appears_while_no_event_arrives(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(cli_progress, "STATUS_EVERY", 0.2)
    with ProgressPrinter(tmp_path / "absent.db", estimate=_estimate()) as printer:
        printer(RunStarted(run_id="r1", store="s"))
        printer(SpeedMeasured(model="m", prefill_per_second=20.0, decode_per_second=8.0))
        printer(_call("judge", 700, 80, 45.0))
        time.sleep(1.6)
    status = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  … ")]
    assert status and "1/10 calls" in status[0] and "780 tokens" in status[0]
    assert "ETA about" in status[0]


@pytest.mark.parametrize(("load", "threads"), [(0.3, 2), (1.2, 1), (15.0, 1)])
def test_the_embedded_server_leaves_busy_cores_to_their_programs(
    monkeypatch: pytest.MonkeyPatch, load: float, threads: int
) -> None:
    from drpo.backends import embedded

    monkeypatch.setattr(embedded.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(embedded.os, "getloadavg", lambda: (load, load, load))
    assert embedded.default_threads() == threads


def test_status_lines_stop_at_a_review_question_and_resume_with_the_decision(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(cli_progress, "STATUS_EVERY", 0.2)
    with ProgressPrinter(tmp_path / "absent.db") as printer:
        printer(RunStarted(run_id="r1", store="s"))
        printer(ReviewNeeded(run_id="r1"))
        capsys.readouterr()
        time.sleep(1.5)
        assert "…" not in capsys.readouterr().err  # nothing runs while a person decides
        printer(StepFinished(node="approve"))  # a decision resumes without RunStarted
        time.sleep(1.6)
    assert "  … 0 calls" in capsys.readouterr().err
