"""Fixtures for running the compiled graph against the stub OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from run_results import comparable_result
from scripted_llm import ScriptedLLM
from stub_server import StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.state.settings import ROLES, Settings, deep_merge, load_settings


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path, stub: StubServer) -> Callable[..., Settings]:
    def build(preset: str = "default", **overrides: Any) -> Settings:
        roles = {role: {"endpoint": stub.base_url, "model": "stub-model"} for role in ROLES}
        base = {
            **roles,
            "store": str(tmp_path / "runs.db"),
            "checkpoints": str(tmp_path / "checkpoints.db"),
            "data": {"retrieval": "bm25"},
        }
        return load_settings(preset=preset, overrides=deep_merge(base, overrides), environ={})

    return build


@pytest.fixture
def run_reference(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Run a schedule once, uninterrupted, on scripted replies: what the runs under test must match.

    Returns its comparable result and how many calls it paid for. It gets its own store so
    its calls are not counted with the test's, and the stub forgets its requests afterwards
    so the test sees only its own.
    """

    def run(schedule: dict[str, Any]) -> dict[str, Any]:
        stub.set_responder(ScriptedLLM())
        settings = make_settings(**schedule, store=str(tmp_path / "reference.db"))
        result = optimize(settings)
        stub.reset()
        store = RunStore(settings.store)
        try:
            paid = sum(c["outcome"] == "ok" for c in store.calls(result.run_id))
        finally:
            store.close()
        return {"result": comparable_result(settings.store, result.run_id), "calls": paid}

    return run
