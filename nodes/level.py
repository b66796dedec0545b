"""Start a level of the search, or the validation round that picks the final prompt."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.state.graph_state import Reset, SearchState
from drpo.state.types import Candidate, Example, Proposal, Query


def level_batch(order: list[str], queries: list[Query], level: int, size: int) -> list[Query]:
    """The level's queries: the next `size` of the seeded order, wrapping around."""
    by_id = {q.id: q for q in queries}
    if not order:
        return []
    picked = [order[(level * size + j) % len(order)] for j in range(min(size, len(order)))]
    missing = [qid for qid in picked if qid not in by_id]
    if missing:
        raise ValueError(f"training query {missing[0]!r} of this run is no longer in the data")
    return [by_id[qid] for qid in picked]


async def retrieve(
    ctx: RunContext, examples: list[Example], queries: list[Query]
) -> dict[str, list[Example]]:
    """Each query's in-context examples, found here once so the level's tasks carry only those."""

    def top_k() -> dict[str, list[Example]]:
        retriever = ctx.retriever_for(examples)
        return {q.id: retriever.top_k(q.query, ctx.settings.data.top_k) for q in queries}

    return await asyncio.to_thread(top_k)


async def start_level(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Open the next level: its query batch, the beam as parents, and their examples."""
    ctx = runtime.context
    level = state.get("level", -1) + 1
    queries = level_batch(state["query_order"], ctx.train, level, ctx.settings.search.batch_size)
    proposals: list[Any] = [Reset()]
    if level == 0:
        proposals += [Proposal(candidate=c) for c in state["beam"]]
    return {
        "phase": "search",
        "level": level,
        "parents": list(state["beam"]),
        "extensions_before_level": state.get("extensions", 0),
        "reviewed": Reset(),
        "level_queries": queries,
        "selections": Reset(),
        "retrieved": await retrieve(ctx, state.get("examples", []), queries),
        "proposals": proposals,
        "scores": Reset(),
    }


def finalists(state: SearchState, count: int, baseline: Candidate) -> list[Candidate]:
    """The best distinct prompts seen, plus the starting prompt as a baseline to beat."""
    chosen: list[Candidate] = []
    for candidate in state.get("leaders", []):
        if all(c.prompt != candidate.prompt for c in chosen):
            chosen.append(candidate)
        if len(chosen) == count:
            break
    if all(c.prompt != baseline.prompt for c in chosen):
        chosen.append(baseline)
    return chosen


async def start_validation(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Open the validation round: the finalists and the baseline on the validation queries."""
    ctx = runtime.context
    search = ctx.settings.search
    baseline = Candidate(id="baseline", prompt=search.initial_prompt)
    candidates = finalists(state, search.finalists, baseline)
    queries = ctx.validation[: search.validation_size]
    return {
        "phase": "validate",
        "reviewed": Reset(),
        "level_queries": queries,
        "selections": Reset(),
        "retrieved": await retrieve(ctx, state.get("examples", []), queries),
        "proposals": [Reset(), *(Proposal(candidate=c) for c in candidates)],
        "scores": Reset(),
    }
