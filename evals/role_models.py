"""The role models an evaluation or a judge check calls, recording under its own id."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack

from drpo.backends.factory import RoleModels, build_role_models
from drpo.checkpoints.store import RunStore
from drpo.state.settings import RoleName, Settings


async def open_role_models(
    stack: AsyncExitStack,
    settings: Settings,
    store: RunStore,
    record_id: str,
    served: Sequence[RoleName],
) -> RoleModels:
    """Build the role models, starting the embedded server when one of `served` runs on it.

    Calls are recorded under `record_id` and replies go through the store's reply cache, as in
    an optimization run: greedy replies are shared across runs when `cache` is on, and always
    replayed within this evaluation (see RoleClient). `stack` closes the clients and servers.
    """
    pool = None
    if any(settings.role(role).is_embedded for role in served):
        from drpo.backends.embedded import EmbeddedServerPool

        pool = EmbeddedServerPool(slots=settings.embedded_slots, ctx=settings.embedded_ctx)
        stack.callback(pool.close)
    ledger = store.for_run(record_id)
    models = await asyncio.to_thread(
        build_role_models, settings, pool=pool, cache=ledger, sink=ledger, run_id=record_id
    )
    stack.push_async_callback(models.aclose)
    return models
