"""Beam: rank the level's scored children by path value and keep the top `width`.

Also the join after expansion (`record_proposals`), deduplication, the skip rule's depth
extension, the best-seen leaderboard, and the lineage records in the run store.
"""

from __future__ import annotations

import math
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.nodes.policy import level_rewards, rejected_ids, same_prompt, unique_proposals
from drpo.state.graph_state import SearchState, earlier_feedback
from drpo.state.types import Candidate, Feedback, LevelScore, Proposal


def worst_feedback(scores: list[LevelScore], candidate_id: str) -> Feedback | None:
    """The candidate's weakest answer at this level: what the optimizer should fix next."""
    own = [s for s in scores if s.candidate_id == candidate_id]
    if not own:
        return None
    own.sort(
        key=lambda s: (s.reward is None, s.reward if s.reward is not None else math.inf, s.query_id)
    )
    return own[0].feedback


def recent_feedback(
    scores: list[LevelScore],
    candidate: Candidate,
    earlier: dict[str, list[Feedback]],
    keep: int,
) -> list[Feedback]:
    """The answers the optimizer sees when it next rewrites this candidate, weakest first.

    This level's answers come first, then those its parent was rewritten from, so even with one
    query per level the optimizer sees more than one query and cannot fit the prompt to it.
    """
    own = sorted(
        (s for s in scores if s.candidate_id == candidate.id and s.reward is not None),
        key=lambda s: (s.reward, s.query_id),
    )
    cases: list[Feedback] = []
    for feedback in [*(s.feedback for s in own), *earlier.get(candidate.parent_id or "", [])]:
        if all(f.query != feedback.query for f in cases):
            cases.append(feedback)
    return cases[:keep]


def rank(children: list[Candidate]) -> list[Candidate]:
    """Candidates best value first."""
    # Ties keep proposal order, which is deterministic (parents in beam order, then index).
    return sorted(children, key=lambda c: -c.value)


def own_reward(candidate: Candidate) -> float:
    """The candidate's own mean reward on the queries it answered; -inf when unscored."""
    return candidate.path_rewards[-1] if candidate.path_rewards else -math.inf


def merge_leaders(
    leaders: list[Candidate], children: list[Candidate], keep: int
) -> list[Candidate]:
    """The best distinct prompts seen so far, by their own reward.

    The beam ranks by path value (the paper's rule), but there the ancestors' rewards dominate;
    which prompt is best seen depends only on how its own answers scored.
    """
    merged: list[Candidate] = []
    for candidate in sorted([*leaders, *children], key=lambda c: -own_reward(c)):
        if not any(same_prompt(c.prompt, candidate.prompt) for c in merged):
            merged.append(candidate)
    return merged[:keep]


async def record_proposals(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Join point after the level's selections and rewrites: store every proposal."""
    ctx = runtime.context
    if state["phase"] == "validate":
        return {}  # the finalists are already in the run store with their search records
    for proposal in state.get("proposals", []):
        ctx.ledger.record_candidate(proposal.candidate, state["level"], None, survived=False)
    return {}


async def beam_select(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Score the level's proposals and keep the best as the next beam."""
    ctx = runtime.context
    search = ctx.settings.search
    level = state["level"]
    scores = state.get("scores", [])
    # A person's reject (or edit, which replaces the proposal) takes a candidate out of the race.
    excluded = rejected_ids(state.get("reviewed", {}))
    proposals = [
        p
        for p in unique_proposals(state.get("proposals", []), search.dedupe)
        if p.candidate.id not in excluded
    ]
    rewards = level_rewards(scores)
    children = scored_children(proposals, rewards)
    beam = rank(children)[: search.width]
    if not beam:
        # Nothing at this level could be scored (e.g. the judge failed throughout): keep the
        # previous beam so the search can go on with the next queries.
        beam = list(state.get("parents") or state["beam"])
    _record_level(ctx, state, proposals, children, rewards, {c.id for c in beam}, excluded)
    extensions = _extensions(state, proposals, ctx.schedule.extension)
    depth_limit = search.depth + extensions
    previous = [c for c in state["leaders"] if c.id not in excluded]
    leaders = merge_leaders(previous, children, ctx.schedule.finalists)
    feedback = {c.id: fb for c in beam if (fb := worst_feedback(scores, c.id)) is not None}
    earlier = earlier_feedback(state)
    recent = {c.id: recent_feedback(scores, c, earlier, search.feedback_queries) for c in beam}
    if leaders:
        ctx.ledger.update_run(best_candidate_id=leaders[0].id, train_value=leaders[0].value)
    get_stream_writer()(
        {
            "event": "level",
            "level": level,
            "depth_limit": depth_limit,
            "beam": [(c.id, c.value, rewards.get(c.id)) for c in beam],
            "children": len(proposals),
            "unscored": len(proposals) - len(children),
        }
    )
    return {
        "beam": beam,
        "feedback": feedback,
        "recent_feedback": recent,
        "leaders": leaders,
        "depth_limit": depth_limit,
        "extensions": extensions,
    }


def scored_children(proposals: list[Proposal], rewards: dict[str, float]) -> list[Candidate]:
    """The proposals that got a level reward, each with that reward appended to its path."""
    return [
        p.candidate.model_copy(
            update={"path_rewards": (*p.candidate.path_rewards, rewards[p.candidate.id])}
        )
        for p in proposals
        if p.candidate.id in rewards
    ]


def _record_level(
    ctx: RunContext,
    state: SearchState,
    competing: list[Proposal],
    children: list[Candidate],
    rewards: dict[str, float],
    survivors: set[str],
    excluded: set[str],
) -> None:
    """Write the level's lineage: each proposal with its reward and whether it survived."""
    level = state["level"]
    for proposal in state.get("proposals", []):
        if proposal.candidate.id in excluded:
            ctx.ledger.record_candidate(
                proposal.candidate, level, rewards.get(proposal.candidate.id), survived=False
            )
    for proposal in competing:
        scored = next((c for c in children if c.id == proposal.candidate.id), proposal.candidate)
        ctx.ledger.record_candidate(
            scored,
            level,
            rewards.get(proposal.candidate.id),
            survived=proposal.candidate.id in survivors,
        )


def _extensions(state: SearchState, competing: list[Proposal], allowed: int) -> int:
    """The skip rule's depth extensions after this level (at most `allowed` in a run)."""
    # Computed from the level's starting count, so re-ranking after a review stays idempotent.
    extensions = state.get("extensions_before_level", state["extensions"])
    if state["level"] > 0 and any(p.skipped for p in competing) and extensions < allowed:
        extensions += 1
    return extensions
