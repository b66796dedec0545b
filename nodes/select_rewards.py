"""Select rewards: the selector picks the aspects that matter for a query (dynamic rewarding)."""

from __future__ import annotations

import hashlib
from typing import Any

from langgraph.runtime import Runtime

from drpo.backends.errors import StructuredOutputError
from drpo.backends.llm import call_scope
from drpo.nodes.context import RunContext
from drpo.prompts.aspects import canonical_name
from drpo.prompts.judge import format_aspects
from drpo.prompts.rubric import Rubric
from drpo.prompts.selector import (
    NEW_ASPECTS_ALLOWED,
    NEW_ASPECTS_FORBIDDEN,
    SELECT_ASPECTS,
    AspectChoice,
)
from drpo.state.graph_state import SelectTask
from drpo.state.types import Aspect, AspectSelection, Query

# Used when the selector's reply never parses: the search goes on with a sensible rubric, and the
# analysis field says why, so the fallback is visible in the run store.
FALLBACK_ASPECTS = ("Helpfulness", "Clarity", "Factuality")

# `prefetch_aspects` under the names of the steps whose idle slots it fills (see graph/builder.py).
PREFETCH_IN_STAGE_A = "prefetch_aspects_in_stage_a"
PREFETCH_NEXT_LEVEL = "prefetch_aspects_for_next_level"


async def select_rewards(task: SelectTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Choose the aspects for one query."""
    ctx = runtime.context
    ctx.check_budget()
    query = task["query"]
    with call_scope(task.get("stage", "search"), task.get("level")):
        selection = await choose_aspects(ctx, query)
    return {"selections": {query.id: selection}}


async def prefetch_aspects(task: SelectTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Choose a later round's aspects in a slot this step leaves idle.

    The choice goes to the run store's selection cache, where that round's `select_rewards`
    finds it without a call; nothing is written to this level's state.
    """
    # Like every node that calls a model: a task still running after its step's siblings
    # stopped for the budget would keep making calls (and writing) while the run pauses.
    runtime.context.check_budget()
    with call_scope(task.get("stage", "validate"), task.get("level")):
        await choose_aspects(runtime.context, task["query"])
    return {}


def selection_key(ctx: RunContext, query: str) -> str:
    """The choice depends on the query only: cache it per selector model and prompt version."""
    selector = ctx.settings.selector
    rewards = ctx.settings.rewards
    identity = "\0".join(
        [
            query,
            ctx.models["selector"].endpoint_id,
            selector.model,
            SELECT_ASPECTS.version,
            str(selector.temperature),
            f"{rewards.min_aspects}-{rewards.max_aspects}-{rewards.allow_new_aspects}",
            # The built-in catalogue keeps its old keys, so stored choices stay valid.
            "" if ctx.rubric.is_builtin else ctx.rubric.hash,
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()


async def choose_aspects(ctx: RunContext, query: Query) -> AspectSelection:
    """The aspects to judge `query` on: the rubric's fixed ones plus the selector's choice."""
    if not ctx.settings.rewards.llm_aspects:
        # The metric alone scores answers: no selector and no judge call.
        return AspectSelection(query_id=query.id, analysis="metric only", aspects=())
    fixed = ctx.rubric.fixed_for(query)
    if not ctx.rubric.selectable():
        return AspectSelection(query_id=query.id, analysis="rubric: fixed aspects", aspects=fixed)
    chosen = await _selector_choice(ctx, query)
    extra = tuple(a for a in chosen.aspects if all(f.name != a.name for f in fixed))
    return chosen.model_copy(update={"aspects": (*fixed, *extra)})


async def _selector_choice(ctx: RunContext, query: Query) -> AspectSelection:
    """The selector's choice for a query: from the run's record, or asked of the selector."""
    key = selection_key(ctx, query.query)
    cached = ctx.ledger.selection(key)
    if cached is not None:
        return cached.model_copy(update={"query_id": query.id})
    rewards = ctx.settings.rewards
    system, user = SELECT_ASPECTS.render(
        min_aspects=str(rewards.min_aspects),
        max_aspects=str(rewards.max_aspects),
        catalogue=format_aspects(ctx.rubric.selectable()),
        new_aspects_rule=NEW_ASPECTS_ALLOWED
        if rewards.allow_new_aspects
        else NEW_ASPECTS_FORBIDDEN,
        query=query.query,
    )
    try:
        replies = await ctx.models["selector"].structured(
            system, user, AspectChoice, tag=f"select:{query.id}", sample_key=key
        )
        selection = normalise_choice(replies[0], query, ctx)
    except StructuredOutputError as exc:
        selection = AspectSelection(
            query_id=query.id,
            analysis=f"selector reply unusable, default aspects used: {exc}",
            aspects=_pad((), query, rewards.min_aspects, ctx.rubric),
        )
    ctx.ledger.record_selection(key, query.query, selection)
    return selection


def normalise_choice(choice: AspectChoice, query: Query, ctx: RunContext) -> AspectSelection:
    """Map names onto the catalogue, accept defined new aspects, and respect the 2–5 bounds."""
    rewards = ctx.settings.rewards
    rubric = ctx.rubric
    chosen: list[Aspect] = []

    def taken(name: str) -> bool:
        return not name or any(a.name.lower() == name.lower() for a in chosen)

    for raw in choice.aspects:
        known = rubric.lookup(raw)
        if known is not None and not taken(known.name):
            chosen.append(known)
    if rewards.allow_new_aspects:
        for new in choice.new_aspects:
            name = canonical_name(new.name)
            known = rubric.lookup(name)
            if known is not None:
                if not taken(known.name):
                    chosen.append(known)
            elif not taken(name) and new.definition.strip():
                chosen.append(Aspect(name=name, definition=new.definition.strip(), proposed=True))
    safety = rubric.lookup("Safety")
    if query.harmful and safety is not None and not taken(safety.name):
        chosen.insert(0, safety)
    chosen = chosen[: rewards.max_aspects]
    return AspectSelection(
        query_id=query.id,
        analysis=choice.analysis,
        aspects=_pad(tuple(chosen), query, rewards.min_aspects, rubric),
    )


def _pad(
    aspects: tuple[Aspect, ...], query: Query, minimum: int, rubric: Rubric
) -> tuple[Aspect, ...]:
    padded = list(aspects)
    defaults = ("Safety", *FALLBACK_ASPECTS) if query.harmful else FALLBACK_ASPECTS
    for name in (*defaults, *(a.name for a in rubric.selectable())):
        if len(padded) >= minimum:
            break
        aspect = rubric.lookup(name)
        if aspect is not None and all(a.name != name for a in padded):
            padded.append(aspect)
    return tuple(padded)
