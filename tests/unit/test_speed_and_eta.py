"""The start-up speed probe, the ETA clock and the off-terminal status lines."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_timings import LlamaTimingsServer
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


@pytest.fixture
def llama_root() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """llama.cpp's native /completion reply: 60 prompt tokens in 3 s, 8 tokens in 1 s."""
    with LlamaTimingsServer([(3000.0, 1000.0)]) as server:
        yield server.root, server.bodies


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


def _estimate(**roles: tuple[int, ...]) -> Estimate:
    """Roles as (calls, prompt bound, completion bound[, model-written part of the prompt])."""
    estimate = Estimate()
    for role, figures in (roles or {"judge": (10, 7000, 800)}).items():
        estimate.roles[role] = RoleEstimate(*figures)  # type: ignore[index]
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
    remaining = clock.remaining(now=fit.seconds)  # the calls so far ran one after another
    base_prompt, base_completion = clock.expected_tokens("base")
    judge_prompt, judge_completion = clock.expected_tokens("judge")
    assert remaining == pytest.approx(
        4 * (0.05 * base_prompt + 0.2 * base_completion)
        + 1 * (0.05 * judge_prompt + 0.2 * judge_completion)
    )


def test_a_role_without_calls_expects_replies_as_full_as_the_other_roles_replies() -> None:
    # Judge replies so far filled 40 of their 80-token bound; the base role's 200-token bound and
    # the 100 tokens of model-written text in its 300-token prompts are expected half full.
    clock = RunClock(_estimate(judge=(4, 2800, 320), base=(4, 1200, 800, 400)))
    clock.call_finished(_call("judge", 700, 30, 10.0), now=10.0)
    clock.call_finished(_call("judge", 700, 50, 10.0), now=10.0)
    assert clock.expected_tokens("base") == pytest.approx((300 - 0.5 * 100, 0.5 * 200))
    # Its own first call then decides: a base reply at its bound means full replies.
    clock.call_finished(_call("base", 300, 200, 10.0), now=20.0)
    assert clock.expected_tokens("base") == pytest.approx((300, 200))


def test_before_any_call_the_tokens_are_the_stored_runs_and_the_forecast_keeps_the_bounds() -> None:
    estimate = _estimate(base=(4, 1200, 800, 400))
    live = RunClock(estimate)
    # 67 % of the bound written, 4 % of the prompt from the prefix cache (PRIOR_FILL/CACHED).
    prompt = (1200 - 0.33 * 400) / 4 * 0.96
    assert live.expected_tokens("base") == pytest.approx((prompt, 0.67 * 800 / 4))
    bound = RunClock(estimate)
    bound.bounds_until_measured = True  # what RunClock.before_start uses
    assert bound.expected_tokens("base") == pytest.approx((300, 200))


def test_only_a_role_whose_calls_hit_the_prefix_cache_expects_hits() -> None:
    clock = RunClock(_estimate(judge=(4, 2800, 320), base=(4, 1200, 320)))
    clock.call_finished(_call("judge", 700, 80, 10.0, cached=280), now=10.0)  # 60 % processed
    assert clock.expected_tokens("judge")[0] == pytest.approx(0.6 * 700)
    assert clock.expected_tokens("base")[0] == pytest.approx(300)


def test_the_clock_divides_the_remaining_work_by_the_concurrency_seen_so_far() -> None:
    clock = RunClock(_estimate(judge=(6, 4200, 480)))
    for _ in range(3):  # three 10-second calls side by side, all done 10 s after the first began
        clock.call_finished(_call("judge", 700, 80, 10.0), now=10.0)
    assert clock.remaining(now=10.0) == pytest.approx(3 * 10.0 / 3)


def test_calls_still_in_flight_count_towards_the_concurrency() -> None:
    clock = RunClock(_estimate(judge=(8, 5600, 640)))
    for _ in range(4):  # four calls sent at once; one is done after 10 s, three still run
        clock.call_started(now=0.0)
    clock.call_finished(_call("judge", 700, 80, 10.0), now=10.0)
    # 7 calls of 10 s left, 4 at a time; finished calls alone would have shown 1 at a time.
    assert clock.remaining(now=10.0) == pytest.approx(7 * 10.0 / 4)
    blind = RunClock(_estimate(judge=(8, 5600, 640)))
    blind.call_finished(_call("judge", 700, 80, 10.0), now=10.0)
    assert blind.remaining(now=10.0) == pytest.approx(7 * 10.0)


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
    monkeypatch.setattr(embedded, "_cpu_times", lambda: None)  # no /proc/stat: load average
    monkeypatch.setattr(embedded.os, "getloadavg", lambda: (load, load, load))
    assert embedded.default_threads() == threads


def _counters(
    monkeypatch: pytest.MonkeyPatch, samples: list[float], own: list[float] | None = None
) -> None:
    """/proc/stat over successive 2-core samples of 200 ticks each with these busy shares, and
    this process's own CPU seconds at each reading (ticks are 1/100 s)."""
    from drpo.backends import embedded

    readings, ticks, idle = [], 1000, 500
    for share in samples:
        readings.append((ticks, idle))
        ticks, idle = ticks + 200, idle + round(200 * (1 - share))
        readings.append((ticks, idle))
    counters, own_times = iter(readings), iter(own or [0.0] * len(readings))
    monkeypatch.setattr(embedded.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(embedded.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(embedded.os, "sysconf", lambda name: 100)
    monkeypatch.setattr(embedded, "_BUSY_SAMPLE_SECONDS", 0.0)
    monkeypatch.setattr(embedded, "_cpu_times", lambda: next(counters))
    monkeypatch.setattr(embedded, "_own_cpu_seconds", lambda: next(own_times))
    monkeypatch.setattr(embedded.os, "getloadavg", lambda: (1.1, 1.1, 1.1))


@pytest.mark.parametrize(("busy_share", "threads"), [(0.0, 2), (0.1, 2), (0.5, 1), (1.0, 1)])
def test_busy_cores_are_measured_now_not_from_a_lagging_load_average(
    monkeypatch: pytest.MonkeyPatch, busy_share: float, threads: int
) -> None:
    """Right after an install the load average still says 1.1; the CPU counters say idle.
    A program that keeps a core busy is seen in both samples."""
    from drpo.backends import embedded

    _counters(monkeypatch, [busy_share, busy_share])
    chosen, why = embedded.thread_choice()
    assert chosen == threads
    assert "busy now" in why


def test_a_moments_work_does_not_take_a_thread_for_the_whole_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from drpo.backends import embedded

    _counters(monkeypatch, [1.0, 0.05])
    assert embedded.thread_choice()[0] == 2


def test_this_process_s_own_work_is_no_other_program_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole core busy in both samples, all of it this process's: 2 threads, not 1."""
    from drpo.backends import embedded

    # Each sample spans 1 s of 2 cores (200 ticks); this process used 1 s of it each time.
    _counters(monkeypatch, [0.5, 0.5], own=[0.0, 1.0, 1.0, 2.0])
    busy, _ = embedded.busy_cores()
    assert busy == pytest.approx(0.0)
    _counters(monkeypatch, [0.5, 0.5], own=[0.0, 0.0, 0.0, 0.0])
    assert embedded.busy_cores()[0] == pytest.approx(1.0)


def test_cpu_counters_are_read_from_proc_stat() -> None:
    from drpo.backends import embedded

    times = embedded._cpu_times()
    if not Path("/proc/stat").exists():
        assert times is None
    else:
        assert times is not None and times[0] >= times[1] > 0


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
