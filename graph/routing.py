"""Routing: small pure functions that decide where the graph goes next, and what fans out."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from drpo.nodes.approve import needs_review, next_after_level
from drpo.nodes.beam import unique_proposals
from drpo.nodes.context import RunContext
from drpo.nodes.generate import scoring_tasks
from drpo.state.graph_state import RewriteTask, SearchState, SelectTask


def route_examples(state: SearchState, runtime: Runtime[RunContext]) -> list[Send] | str:
    """Stage A fans out one task per example, or is skipped."""
    stage = runtime.context.settings.examples
    examples = state.get("examples", [])
    if not stage.enabled or stage.rounds == 0 or not examples:
        return "start_level"
    count = len(examples) if stage.limit is None else min(stage.limit, len(examples))
    return [Send("optimize_example", {"index": i, "example": examples[i]}) for i in range(count)]


def route_level(state: SearchState, runtime: Runtime[RunContext]) -> list[Send]:
    """A level selects aspects for its queries and, past the root, expands every beam prompt."""
    level = state["level"]
    sends = [
        Send("select_rewards", SelectTask(query=q, stage="search", level=level))
        for q in state["level_queries"]
    ]
    if level == 0:
        # The root level only selects, leaving slots idle; the validation round (which every
        # run reaches) would otherwise spend a step of its own on the same selector calls.
        ctx = runtime.context
        idle = max(ctx.settings.max_concurrency - len(sends), 0)
        validation = ctx.validation[: min(ctx.settings.search.validation_size, idle)]
        sends += [
            Send("prefetch_aspects", SelectTask(query=q, stage="validate")) for q in validation
        ]
    else:
        feedback = state.get("feedback", {})
        sends += [
            Send(
                "rewrite",
                RewriteTask(candidate=c, last_feedback=feedback.get(c.id), level=state["level"]),
            )
            for c in state["beam"]
        ]
    return sends


def route_validation(state: SearchState) -> list[Send] | str:
    if not state["level_queries"]:
        return "finalize"
    return [
        Send("select_rewards", SelectTask(query=q, stage="validate"))
        for q in state["level_queries"]
    ]


def route_scoring(state: SearchState, runtime: Runtime[RunContext]) -> list[Send] | str:
    """Score every (distinct) proposal on every query of the level, one task each."""
    phase = state.get("phase", "search")
    stage: Literal["search", "validate"] = "validate" if phase == "validate" else "search"
    dedupe = runtime.context.settings.search.dedupe or stage == "validate"
    sends = scoring_tasks(state, unique_proposals(state.get("proposals", []), dedupe), stage)
    if sends:
        return sends
    return "beam_select" if stage == "search" else "finalize"


def route_scored(state: SearchState, runtime: Runtime[RunContext]) -> str:
    """After the level's scoring: rank the search's children, or pick the final prompt."""
    if state.get("phase") != "validate":
        return "beam_select"
    return "approve" if runtime.context.settings.review.policy == "final" else "finalize"


def route_after_level(state: SearchState, runtime: Runtime[RunContext]) -> str:
    """After ranking: a person reviews the new beam if the policy says so, else go on."""
    if needs_review(state, runtime.context.settings):
        return "approve"
    return next_after_level(state)
