"""Routing: small pure functions that decide where the graph goes next, and what fans out."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from drpo.nodes.context import RunContext
from drpo.nodes.generate import scoring_tasks
from drpo.nodes.policy import level_batch, needs_review, next_after_level, unique_proposals
from drpo.nodes.select_rewards import PREFETCH_IN_STAGE_A, PREFETCH_NEXT_LEVEL
from drpo.state.graph_state import RewriteTask, SearchState, SelectTask, earlier_feedback


def route_examples(state: SearchState, runtime: Runtime[RunContext]) -> list[Send] | str:
    """Stage A fans out one task per example, or is skipped."""
    ctx = runtime.context
    count = ctx.schedule.stage_a_size
    if count == 0:
        return "start_level"
    examples = state["examples"]
    sends = [Send("optimize_example", {"index": i, "example": examples[i]}) for i in range(count)]
    if not may_prefetch(ctx):
        return sends
    # Queued behind the example tasks, these take the slots the shorter chains leave idle.
    return (
        sends
        + prefetch_level(PREFETCH_IN_STAGE_A, state, ctx, 0)
        + prefetch_validation(PREFETCH_IN_STAGE_A, ctx, ctx.schedule.validation_size)
    )


def may_prefetch(ctx: RunContext) -> bool:
    """Not under a calls or tokens budget: a choice made early would be paid for before the
    step that needs it, and could push the run past its budget within the current step."""
    return ctx.budget is None or not ctx.budget.limits_spending


def prefetch_level(node: str, state: SearchState, ctx: RunContext, level: int) -> list[Send]:
    """Aspect choices for a later level's queries, made in slots the current step leaves idle.

    A choice depends on the query alone and the order of queries is fixed when the run starts,
    so it can be made early; that level's `select_rewards` then finds it without a call.
    """
    queries = level_batch(state["query_order"], ctx.train, level, ctx.schedule.queries_per_level)
    return [Send(node, SelectTask(query=q, stage="search", level=level)) for q in queries]


def prefetch_validation(node: str, ctx: RunContext, count: int) -> list[Send]:
    """Aspect choices for the first `count` validation queries, made early like a level's."""
    queries = ctx.validation[: min(count, ctx.schedule.validation_size)]
    return [Send(node, SelectTask(query=q, stage="validate")) for q in queries]


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
        # When stage A ran, its idle slots have already made these choices.
        ctx = runtime.context
        if may_prefetch(ctx) and ctx.schedule.stage_a_size == 0:
            idle = max(ctx.settings.max_concurrency - len(sends), 0)
            sends += prefetch_validation("prefetch_aspects", ctx, idle)
    else:
        feedback = state["feedback"]
        recent = earlier_feedback(state)
        sends += [
            Send(
                "rewrite",
                RewriteTask(
                    candidate=c,
                    last_feedback=feedback.get(c.id),
                    level=state["level"],
                    feedback_cases=recent.get(c.id, []),
                ),
            )
            for c in state["beam"]
        ]
    return sends


def route_validation(state: SearchState) -> list[Send] | str:
    """Send each validation query to select its aspects; without any, finalize."""
    if not state["level_queries"]:
        return "finalize"
    return [
        Send("select_rewards", SelectTask(query=q, stage="validate"))
        for q in state["level_queries"]
    ]


def route_scoring(state: SearchState, runtime: Runtime[RunContext]) -> list[Send] | str:
    """Score every (distinct) proposal on every query of the level, one task each."""
    stage: Literal["search", "validate"] = "validate" if state["phase"] == "validate" else "search"
    dedupe = runtime.context.settings.search.dedupe or stage == "validate"
    sends = scoring_tasks(state, unique_proposals(state.get("proposals", []), dedupe), stage)
    if (
        sends
        and stage == "search"
        and state["level"] < state["depth_limit"]
        and may_prefetch(runtime.context)
    ):
        # The next level is certain (short of a person's stop or a budget): its aspect choices
        # fill the slots this level's last answers and judgements leave idle.
        sends += prefetch_level(PREFETCH_NEXT_LEVEL, state, runtime.context, state["level"] + 1)
    if sends:
        return sends
    return "beam_select" if stage == "search" else "finalize"


def route_scored(state: SearchState, runtime: Runtime[RunContext]) -> str:
    """After the level's scoring: rank the search's children, or pick the final prompt."""
    if state["phase"] != "validate":
        return "beam_select"
    return "approve" if runtime.context.settings.review.policy == "final" else "finalize"


def route_after_level(state: SearchState, runtime: Runtime[RunContext]) -> str:
    """After ranking: a person reviews the new beam if the policy says so, else go on."""
    if needs_review(state, runtime.context.settings):
        return "approve"
    return next_after_level(state)
