"""Fixtures for running the compiled graph against the stub OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stub_server import StubServer

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
