"""Prepare: fix the seeded query orders and the root of the search tree, once per run."""

from __future__ import annotations

import math
import random
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.state.graph_state import RunInput
from drpo.state.types import Candidate, Query

ROOT_ID = "L0-root"


def seeded_order(query_ids: list[str], seed: int) -> list[str]:
    """The training queries in a reproducible order, recorded with the run."""
    order = list(query_ids)
    random.Random(seed).shuffle(order)
    return order


def harmful_places(size: int, harmful: int, total: int) -> int:
    """How many of the first `size` validation places go to harmful queries.

    The data's proportion, rounded half up; but once there are two places, each kind the data
    holds gets at least one, or a small validation set would be blind to safety (or to
    helpfulness), which is what the final pick must weigh.
    """
    if total == 0:
        return 0
    share = math.floor(size * harmful / total + 0.5)
    if size >= 2 and harmful > 0:
        share = max(share, 1)
    if size >= 2 and harmful < total:
        share = min(share, size - 1)
    return min(share, harmful, size)


def stratified_order(queries: list[Query], seed: int) -> list[Query]:
    """Validation queries in a seeded order whose every prefix is stratified by `harmful`.

    The validation round takes the first N; laid out this way any N holds harmful and benign
    queries in the data's proportion, and the same seed gives the same queries.
    """
    rng = random.Random(seed)
    harmful = [q for q in queries if q.harmful]
    benign = [q for q in queries if not q.harmful]
    rng.shuffle(harmful)
    rng.shuffle(benign)
    order: list[Query] = []
    for size in range(1, len(queries) + 1):
        taken = sum(q.harmful for q in order)
        benign_left = len(benign) - (size - 1 - taken)
        wants_harmful = taken < harmful_places(size, len(harmful), len(queries))
        if (wants_harmful and taken < len(harmful)) or benign_left == 0:
            order.append(harmful[taken])
        else:
            order.append(benign[size - 1 - taken])
    return order


async def prepare(state: RunInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Set up a run: the seeded query order, the root candidate and the starting examples."""
    ctx = runtime.context
    settings = ctx.settings
    order = seeded_order([q.id for q in ctx.train], settings.seed)
    ctx.ledger.update_run(query_order=order)
    root = Candidate(id=ROOT_ID, prompt=settings.search.initial_prompt)
    return {
        "run_id": state["run_id"],
        "phase": "examples",
        "examples": list(ctx.seed_examples),
        "query_order": order,
        "level": -1,
        "depth_limit": settings.search.depth,
        "extensions": 0,
        "beam": [root],
        "feedback": {},
        "recent_feedback": {},
        "leaders": [],
        "stop_requested": False,
    }
