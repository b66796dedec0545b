"""Several replicas of one model server: spread calls, cap each one, fail over when one breaks.

Each call goes to the healthy replica with the fewest calls in flight, waiting while every
replica is at its own concurrency limit. A replica that fails with a connection error, a timeout,
a 429 or a 5xx is marked unhealthy for a cooldown and the call moves to another replica; when
every replica is unhealthy the least recently failed one is tried anyway, so a recovered
server is found again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import openai
from langchain_core.language_models import BaseLanguageModel

COOLDOWN_SECONDS = 30.0

# Failures that say something about the replica, not about the request.
FAILOVER_ERRORS = (
    openai.APIConnectionError,  # includes timeouts
    openai.RateLimitError,
    openai.InternalServerError,
)


@dataclass
class ReplicaState:
    """One server's load and health, shared by every role that calls it."""

    url: str
    limit: int | None = None
    in_flight: int = 0
    unhealthy_until: float = 0.0


class ReplicaBoard:
    """The run's replica states by URL: a concurrency limit holds across roles."""

    def __init__(self, cooldown: float = COOLDOWN_SECONDS) -> None:
        self.cooldown = cooldown
        self.states: dict[str, ReplicaState] = {}
        self._changed: asyncio.Condition | None = None

    def state(self, url: str, limit: int | None) -> ReplicaState:
        """The shared state of the replica at `url`, keeping the lowest limit any role gave."""
        state = self.states.setdefault(url, ReplicaState(url, limit))
        if limit is not None and (state.limit is None or limit < state.limit):
            state.limit = limit  # roles that disagree about a server's limit get the lowest
        return state

    def condition(self) -> asyncio.Condition:
        """The condition waiters are woken on when a slot frees or a replica's health changes."""
        # Created on first use, inside the run's event loop (the board is built in a thread).
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed


@dataclass
class Replica:
    """A role's client for one replica."""

    state: ReplicaState
    model: BaseLanguageModel[Any]

    @property
    def url(self) -> str:
        """The replica's server URL."""
        return self.state.url

    @property
    def in_flight(self) -> int:
        """Requests in flight on this replica, over all roles."""
        return self.state.in_flight

    @property
    def unhealthy_until(self) -> float:
        """The monotonic time until which the replica counts as unhealthy (0: healthy)."""
        return self.state.unhealthy_until

    def has_room(self) -> bool:
        """Whether the replica can take one more request under its limit."""
        state = self.state
        return state.limit is None or state.in_flight < state.limit


class ReplicaPool:
    """The replicas of one role, shared by all of the role's concurrent calls."""

    def __init__(self, board: ReplicaBoard, replicas: list[Replica]) -> None:
        if not replicas:
            raise ValueError("a replica pool needs at least one replica")
        self.board = board
        self.replicas = replicas

    def _choose(self, tried: set[str]) -> Replica | None:
        now = time.monotonic()
        free = [r for r in self.replicas if r.has_room()]
        untried = [r for r in free if r.url not in tried] or free
        healthy = [r for r in untried if r.unhealthy_until <= now]
        if healthy:
            return min(healthy, key=lambda r: r.in_flight)
        if untried and all(r.unhealthy_until > now for r in self.replicas):
            return min(untried, key=lambda r: r.unhealthy_until)
        return None

    @asynccontextmanager
    async def use(self, tried: set[str]) -> AsyncIterator[Replica]:
        """Hold a slot on the best replica not in `tried` (if any is left) for one request."""
        changed = self.board.condition()
        async with changed:
            while (replica := self._choose(tried)) is None:
                # Wake up at the latest when a cooldown ends: a healthy replica may be free.
                await _wait(changed, timeout=1.0)
            replica.state.in_flight += 1
        try:
            yield replica
        finally:
            async with changed:
                replica.state.in_flight -= 1
                changed.notify_all()

    def mark_unhealthy(self, replica: Replica) -> None:
        """Keep requests off the replica for the board's cooldown."""
        replica.state.unhealthy_until = time.monotonic() + self.board.cooldown

    def mark_healthy(self, replica: Replica) -> None:
        """Let the replica take requests again."""
        replica.state.unhealthy_until = 0.0


async def _wait(condition: asyncio.Condition, timeout: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(condition.wait(), timeout)
