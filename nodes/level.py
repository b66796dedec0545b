"""Start a level of the search, or the validation round that picks the final prompt."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.nodes.policy import level_batch, same_prompt
from drpo.state.graph_state import Reset, SearchState
from drpo.state.types import Candidate, Example, Proposal, Query


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
    level = state["level"] + 1
    queries = level_batch(state["query_order"], ctx.train, level, ctx.settings.search.batch_size)
    proposals: list[Any] = [Reset()]
    if level == 0:
        proposals += [Proposal(candidate=c) for c in state["beam"]]
    return {
        "phase": "search",
        "level": level,
        "parents": list(state["beam"]),
        "extensions_before_level": state["extensions"],
        "reviewed": Reset(),
        "level_queries": queries,
        "selections": Reset(),
        "retrieved": await retrieve(ctx, state["examples"], queries),
        "proposals": proposals,
        "scores": Reset(),
    }


def finalists(state: SearchState, count: int, baseline: Candidate) -> list[Candidate]:
    """The best distinct prompts seen, plus the starting prompt as a baseline to beat."""
    chosen: list[Candidate] = []
    for candidate in state["leaders"]:
        if not any(same_prompt(c.prompt, candidate.prompt) for c in chosen):
            chosen.append(candidate)
        if len(chosen) == count:
            break
    if not any(same_prompt(c.prompt, baseline.prompt) for c in chosen):
        chosen.append(baseline)
    return chosen


async def start_validation(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Open the validation round: the finalists and the baseline on the validation queries."""
    ctx = runtime.context
    search = ctx.settings.search
    baseline = Candidate(id="baseline", prompt=search.initial_prompt)
    candidates = finalists(state, ctx.schedule.finalists, baseline)
    queries = ctx.validation[: ctx.schedule.validation_size]
    return {
        "phase": "validate",
        "reviewed": Reset(),
        "level_queries": queries,
        "selections": Reset(),
        "retrieved": await retrieve(ctx, state["examples"], queries),
        "proposals": [Reset(), *(Proposal(candidate=c) for c in candidates)],
        "scores": Reset(),
    }
