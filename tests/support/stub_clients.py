"""A judge-role client aimed at the stub server, for tests that drive one role directly."""

from __future__ import annotations

from typing import Any

from drpo.backends.factory import build_langchain_model
from drpo.backends.llm import RoleClient
from drpo.checkpoints.ledger import RunLedger
from drpo.state.settings import RoleSettings


def stub_judge(url: str, ledger: RunLedger | None = None, **settings: Any) -> RoleClient:
    """The judge role on a llama.cpp-like stub at `url`; with `ledger`, its reply cache and
    call records too."""
    role = RoleSettings(endpoint=url, model="stub-model", provider="llamacpp", **settings)
    return RoleClient(
        role="judge",
        settings=role,
        model=build_langchain_model(role, url, "k", "stub-model"),
        endpoint_id=url,
        cache=ledger,
        sink=ledger,
    )
