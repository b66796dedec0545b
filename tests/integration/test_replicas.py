"""Several replicas per role: calls are spread within each replica's limit, and fail over."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from run_results import comparable_result
from scripted_llm import ScriptedLLM
from stub_server import StubError, StubRequest, StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.state.events import RunEvent, RunWarning
from drpo.state.settings import ROLES, ConfigError, Settings

pytestmark = pytest.mark.integration

SCHEDULE: dict[str, Any] = {
    "search": {"width": 2, "actions": 2, "depth": 2, "batch_size": 2, "validation_size": 2},
    "examples": {"rounds": 1, "limit": 2},
    "max_concurrency": 4,
}


def with_replicas(*urls: str, limit: int | None = None) -> dict[str, Any]:
    endpoints = [{"url": u, "max_concurrency": limit} for u in urls]
    # `endpoint` may only repeat the first replica (the fixture sets it for every role).
    first = {"endpoint": urls[0], "endpoints": endpoints, "timeout": 5, "retries": 1}
    return {role: first for role in ROLES}


def model_calls(stub: StubServer) -> int:
    return sum(c.role not in ("models", "health") for c in stub.requests)


def calls(store_path: str | Path, run_id: str) -> list[dict[str, Any]]:
    store = RunStore(Path(store_path))
    try:
        return store.calls(run_id)
    finally:
        store.close()


class Probe(ScriptedLLM):
    """Scripted replies that take a while, counting the requests being answered at once.

    Counted inside the request, not by the server: the server counts a request as done only
    after writing its reply, when the client may already have sent the next one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0

    def __call__(self, request: StubRequest) -> str | StubError:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(0.03)
        with self.lock:
            self.in_flight -= 1
        return super().__call__(request)


@pytest.fixture
def second() -> Iterator[StubServer]:
    with StubServer(ScriptedLLM()) as server:
        yield server


@pytest.fixture
def dead_url() -> str:
    """The address of a server that has gone away: connections are refused."""
    with StubServer() as gone:
        url = gone.base_url
    return url


@pytest.fixture
def reference(run_reference: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    return run_reference(SCHEDULE)["result"]


def test_calls_are_spread_over_replicas_each_within_its_own_limit(
    stub: StubServer,
    second: StubServer,
    reference: dict[str, Any],
    make_settings: Callable[..., Settings],
) -> None:
    probes = Probe(), Probe()
    stub.set_responder(probes[0])
    second.set_responder(probes[1])
    settings = make_settings(**SCHEDULE, **with_replicas(stub.base_url, second.base_url, limit=1))
    result = optimize(settings)
    assert result.status == "completed"
    assert comparable_result(settings.store, result.run_id) == reference
    assert model_calls(stub) > 5 and model_calls(second) > 5
    assert probes[0].peak == probes[1].peak == 1
    served = {c["replica"] for c in calls(settings.store, result.run_id) if c["outcome"] == "ok"}
    assert served == {stub.base_url, second.base_url}


def test_a_dead_replica_is_a_warning_and_its_calls_fail_over(
    stub: StubServer,
    dead_url: str,
    reference: dict[str, Any],
    make_settings: Callable[..., Settings],
) -> None:
    events: list[RunEvent] = []
    settings = make_settings(**SCHEDULE, **with_replicas(dead_url, stub.base_url))
    result = optimize(settings, on_event=events.append)
    assert comparable_result(settings.store, result.run_id) == reference
    warnings = [e.message for e in events if isinstance(e, RunWarning)]
    assert warnings and all(dead_url in w and "other replicas" in w for w in warnings)
    rows = calls(settings.store, result.run_id)
    assert {c["replica"] for c in rows if c["outcome"] == "ok"} == {stub.base_url}
    failed = [c for c in rows if c["outcome"] == "error"]
    # Marked unhealthy after its first failures, the dead replica is then left alone.
    assert failed and all(c["replica"] == dead_url for c in failed)
    assert all("trying another replica" in c["error"] for c in failed)
    assert len(failed) <= SCHEDULE["max_concurrency"]


def test_a_replica_answering_errors_is_failed_over(
    stub: StubServer,
    reference: dict[str, Any],
    make_settings: Callable[..., Settings],
) -> None:
    def broken(request: StubRequest) -> StubError:
        return StubError(503)

    with StubServer(broken) as faulty:
        settings = make_settings(**SCHEDULE, **with_replicas(faulty.base_url, stub.base_url))
        result = optimize(settings)
        assert model_calls(faulty) >= 1
    assert comparable_result(settings.store, result.run_id) == reference
    rows = calls(settings.store, result.run_id)
    assert {c["replica"] for c in rows if c["outcome"] == "ok"} == {stub.base_url}
    assert all("HTTP 503" in c["error"] for c in rows if c["outcome"] == "error")


def test_no_reachable_replica_is_an_error_before_anything_is_written(
    dead_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with StubServer() as other:
        other_dead = other.base_url
    settings = make_settings(**SCHEDULE, **with_replicas(dead_url, other_dead))
    with pytest.raises(ConfigError, match="base: no replica is reachable"):
        optimize(settings)
    assert not Path(settings.store).exists()
