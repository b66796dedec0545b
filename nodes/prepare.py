"""Prepare: fix the seeded query order and the root of the search tree, once per run."""

from __future__ import annotations

import random
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.state.graph_state import RunInput
from drpo.state.types import Candidate

ROOT_ID = "L0-root"


def seeded_order(query_ids: list[str], seed: int) -> list[str]:
    """The training queries in a reproducible order, recorded with the run."""
    order = list(query_ids)
    random.Random(seed).shuffle(order)
    return order


async def prepare(state: RunInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Set up a run: the seeded query order, the root candidate and the starting examples."""
    ctx = runtime.context
    settings = ctx.settings
    order = seeded_order([q.id for q in ctx.train], settings.seed)
    ctx.recorder.update_run(ctx.run_id, query_order=order)
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
        "leaders": [],
        "stop_requested": False,
    }
