"""Faulty model servers: runs complete, failures are recorded, a dead endpoint pauses the run.

A fault-injecting proxy (tests/support/fault_proxy.py) sits between drpo and the stub server and
answers a seeded 20 % of requests with 429 (Retry-After), 500, 503, a hang past the client
timeout, a connection reset, a body cut short mid-transfer, a complete reply with cut JSON, or
JSON that breaks the requested schema.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_drpo
from fault_proxy import FAULTS, FaultEvent, FaultProxy, FaultRequest, first_attempt
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, ConfigDict
from run_results import comparable_result, paid_keys
from scripted_llm import ScriptedLLM
from stub_runs import DRPO, optimize_args
from stub_server import StubServer

from drpo.backends.errors import StructuredOutputError
from drpo.backends.factory import build_langchain_model
from drpo.backends.llm import RoleClient
from drpo.checkpoints.store import RunStore
from drpo.state.settings import ROLES, RoleSettings

pytestmark = pytest.mark.integration

SEED = 11
TIMEOUT = 2.0  # seconds per request: the proxy's hangs last longer
HANG = 2.5
EXIT_PAUSED = 3


def run_args(url: str, folder: Path, *extra: str) -> list[str]:
    """A small run with every stage (2 examples, 3 levels, validation) and short timeouts."""
    timeouts = [arg for role in ROLES for arg in ("--set", f"{role}.timeout={TIMEOUT}")]
    return optimize_args(url, folder, *timeouts, *extra, concurrency=4)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """One scripted stub for the module (its replies depend only on the request)."""
    with StubServer(ScriptedLLM(), latency=0.01) as server:
        yield server


@pytest.fixture(scope="module")
def reference(stub: StubServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The result of the same run without faults."""
    folder = tmp_path_factory.mktemp("reference")
    done = run_drpo(*run_args(stub.base_url, folder))
    assert done.returncode == 0, done.stderr
    return comparable_result(folder / "runs.db")


def retry_gaps(events: list[FaultEvent], fault: str) -> list[float]:
    """Seconds from each injected `fault` to the next attempt of the same request."""
    gaps = []
    for index, event in enumerate(events):
        if event.fault != fault:
            continue
        retry = next(
            (
                e
                for e in events[index + 1 :]
                if e.digest == event.digest and e.attempt == event.attempt + 1
            ),
            None,
        )
        if retry is not None:
            gaps.append(retry.time - event.time)
    return gaps


def scores(store_path: Path) -> list[tuple[str, str, int | None, str | None]]:
    store = RunStore(store_path)
    try:
        rows = store.db.execute(
            "select a.candidate_id, j.aspect, j.score, j.error from judgements j "
            "join answers a on a.run_id = j.run_id and a.id = j.answer_id"
        ).fetchall()
        return [tuple(r) for r in rows]
    finally:
        store.close()


# ---- one fault at a time, through the LLM layer -------------------------------------------


class Reply(BaseModel):
    """A minimal structured reply (routed like stage A's example rewrite)."""

    model_config = ConfigDict(extra="forbid", title="ExampleRewrite")
    answer: str


def role_client(url: str, retries: int = 2) -> RoleClient:
    settings = RoleSettings(endpoint=url, model="stub-model", timeout=TIMEOUT, retries=retries)
    model = build_langchain_model(settings, url, "sk-test", "stub-model")
    return RoleClient("judge", settings, model, url)


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "schema"])
async def test_each_transport_fault_is_retried_once_and_absorbed(
    fault: str, stub: StubServer
) -> None:
    with FaultProxy(stub.base_url, chooser=first_attempt(fault), hang_seconds=HANG) as proxy:
        started = time.monotonic()
        (reply,) = await role_client(proxy.base_url).structured("system", f"user {fault}", Reply)
        elapsed = time.monotonic() - started
    assert reply.answer
    events = [e for e in proxy.events if e.method == "POST"]
    assert [e.fault for e in events] == [fault, None]
    if fault == "hang":
        assert elapsed >= TIMEOUT  # the client gave up on the hung request, then retried


async def test_schema_breaking_replies_are_retried_with_the_error_then_raised(
    stub: StubServer,
) -> None:
    with (
        FaultProxy(stub.base_url, chooser=first_attempt("schema")) as proxy,
        pytest.raises(StructuredOutputError, match="no valid reply after 3 tries"),
    ):
        await role_client(proxy.base_url).structured("system", "user", Reply)
    bodies = [e for e in proxy.events if e.method == "POST"]
    assert len(bodies) == 3 and len({e.digest for e in bodies}) == 3  # each retry says why


@pytest.mark.parametrize("retry_after", [1.0, 2.0])
async def test_retry_after_delays_the_retry(retry_after: float, stub: StubServer) -> None:
    chooser = first_attempt("429")
    with FaultProxy(stub.base_url, chooser=chooser, retry_after=retry_after) as proxy:
        started = time.monotonic()
        await role_client(proxy.base_url).call([HumanMessage("a prompt that is rate limited")])
        elapsed = time.monotonic() - started
    (gap,) = retry_gaps(proxy.events, "429")
    assert retry_after - 0.05 <= gap < retry_after + 0.5, gap
    assert elapsed >= retry_after


async def test_server_errors_back_off_with_jitter(stub: StubServer) -> None:
    with FaultProxy(stub.base_url, chooser=first_attempt("503")) as proxy:
        client = role_client(proxy.base_url)
        await asyncio.gather(*(client.call([HumanMessage(f"call {i}")]) for i in range(6)))
    gaps = retry_gaps(proxy.events, "503")
    assert len(gaps) == 6
    # The SDK's first backoff is 0.5 s less up to 25 % jitter: 0.375-0.5 s, not all alike.
    assert all(0.35 <= g <= 0.6 for g in gaps), gaps
    assert max(gaps) - min(gaps) > 0.005, gaps


# ---- whole runs ---------------------------------------------------------------------------


def test_run_completes_through_a_server_failing_one_request_in_five(
    stub: StubServer, reference: dict[str, Any], tmp_path: Path
) -> None:
    retries = [arg for role in ROLES for arg in ("--set", f"{role}.retries=5")]
    proxy = FaultProxy(stub.base_url, rate=0.2, seed=SEED, rotate=True, hang_seconds=HANG)
    with proxy:
        done = run_drpo(*run_args(proxy.base_url, tmp_path, *retries))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    injected = proxy.injected()
    posts = [e for e in proxy.events if e.method == "POST"]
    assert set(injected) == set(FAULTS), injected
    assert 0.1 < sum(injected.values()) / len(posts) < 0.3
    # Every fault was absorbed by a retry, so the run found what the fault-free run found.
    assert comparable_result(tmp_path / "runs.db") == reference
    _, paid = paid_keys(tmp_path / "runs.db")
    assert len(paid) == len(set(paid))
    # A 429 with Retry-After: 1 was retried no sooner than a second later.
    assert min(retry_gaps(proxy.events, "429")) >= 0.95
    assert all(score is None or 1 <= score <= 5 for _, _, score, _ in scores(tmp_path / "runs.db"))


def test_judge_replies_that_never_parse_are_missing_per_candidate_never_zero(
    stub: StubServer, tmp_path: Path
) -> None:
    def breaks_judgements(request: FaultRequest) -> str | None:
        # Most judge replies break the schema (retries included), so some judgements fail.
        if b'"Judgement"' not in request.body:
            return None
        return "schema" if int(request.digest[:4], 16) % 10 < 6 else None

    with FaultProxy(stub.base_url, chooser=breaks_judgements) as proxy:
        done = run_drpo(
            *run_args(stub.base_url, tmp_path, "--set", f"judge.endpoint={proxy.base_url}")
        )
    assert done.returncode == 0, done.stderr
    rows = scores(tmp_path / "runs.db")
    missing = [r for r in rows if r[2] is None and r[1] != "(judge)"]
    errors = [r for r in rows if r[1] == "(judge)"]
    assert missing and errors, "the chosen fault rate should leave some judgements missing"
    assert all("no valid reply after 3 tries" in (r[3] or "") for r in errors)
    assert all(score != 0 for _, _, score, _ in rows)
    assert {c for c, *_ in errors} <= {c for c, _, s, _ in rows if s is None}
    store = RunStore(tmp_path / "runs.db")
    (run,) = store.runs()
    assert run["status"] == "completed"
    # An answer with no usable score has no reward (NULL), not 0.
    rewards = store.db.execute(
        "select reward from answers a where run_id = ? and not exists (select 1 from judgements j "
        "where j.run_id = a.run_id and j.answer_id = a.id and j.score is not null)",
        [run["id"]],
    ).fetchall()
    assert rewards and all(r[0] is None for r in rewards)
    invalid = [c for c in store.calls(run["id"]) if c["outcome"] == "invalid"]
    assert len(invalid) >= 3 * len(errors)
    store.close()


def test_a_dead_endpoint_pauses_the_run_and_resume_finishes_it(
    stub: StubServer, reference: dict[str, Any], tmp_path: Path
) -> None:
    proxy = FaultProxy(stub.base_url, rate=0.0).start()
    port = proxy.port
    args = run_args(
        stub.base_url,
        tmp_path,
        "--set",
        f"judge.endpoint={proxy.base_url}",
        "--set",
        "judge.retries=1",
    )
    process = subprocess.Popen(
        [*DRPO, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while sum(e.role == "Judgement" for e in proxy.events) < 5:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proxy.stop()  # the judge's server goes away: connections are refused from now on
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        proxy.stop()
    assert process.returncode == EXIT_PAUSED, stderr
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if "paused" in line]
    store = RunStore(tmp_path / "runs.db")
    (run,) = store.runs()
    store.close()
    run_id = run["id"]
    assert line.startswith(
        f"run {run_id} paused: judge: {proxy.base_url}: endpoint unreachable: "
        "Connection refused (after 1 retry)"
    )
    assert line.endswith(f"(resume with: drpo resume {run_id})")
    assert run["status"] == "paused"
    _, paid_before = paid_keys(tmp_path / "runs.db")

    with FaultProxy(stub.base_url, rate=0.0, port=port):  # the server is back, same address
        resumed = run_drpo("resume", run_id, "--store", str(tmp_path / "runs.db"))
    assert resumed.returncode == 0, resumed.stderr
    assert comparable_result(tmp_path / "runs.db") == reference
    _, paid = paid_keys(tmp_path / "runs.db")
    assert len(paid) == len(set(paid)) and set(paid_before) <= set(paid)
