"""Beam: rank the level's scored children by path value and keep the top `width`.

Also the join after expansion (`record_proposals`), deduplication, the skip rule's depth
extension, the best-seen leaderboard, and the lineage records in the run store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.state.graph_state import SearchState
from drpo.state.types import Candidate, Feedback, LevelScore, Proposal


def normalise_prompt(prompt: str) -> str:
    """A prompt with case and whitespace folded, to compare prompts for duplicates."""
    return " ".join(prompt.split()).lower()


def unique_proposals(proposals: list[Proposal], dedupe: bool) -> list[Proposal]:
    """Drop proposals whose prompt repeats an earlier one at this level (identical beams)."""
    if not dedupe:
        return list(proposals)
    seen: set[str] = set()
    kept: list[Proposal] = []
    for proposal in proposals:
        key = normalise_prompt(proposal.candidate.prompt)
        if key not in seen:
            seen.add(key)
            kept.append(proposal)
    return kept


def level_rewards(scores: list[LevelScore]) -> dict[str, float]:
    """Mean reward per candidate over its scored queries; unscored candidates are absent."""
    by_candidate: dict[str, list[float]] = defaultdict(list)
    for score in scores:
        if score.reward is not None:
            by_candidate[score.candidate_id].append(score.reward)
    return {cid: sum(values) / len(values) for cid, values in by_candidate.items()}


def worst_feedback(scores: list[LevelScore], candidate_id: str) -> Feedback | None:
    """The candidate's weakest answer at this level: what the optimizer should fix next."""
    own = [s for s in scores if s.candidate_id == candidate_id]
    if not own:
        return None
    own.sort(
        key=lambda s: (s.reward is None, s.reward if s.reward is not None else math.inf, s.query_id)
    )
    return own[0].feedback


def rank(children: list[Candidate]) -> list[Candidate]:
    """Candidates best value first."""
    # Ties keep proposal order, which is deterministic (parents in beam order, then index).
    return sorted(children, key=lambda c: -c.value)


def merge_leaders(
    leaders: list[Candidate], children: list[Candidate], keep: int
) -> list[Candidate]:
    """The best `keep` distinct prompts of the leaders so far and this level's children."""
    merged: list[Candidate] = []
    for candidate in rank([*leaders, *children]):
        if all(normalise_prompt(c.prompt) != normalise_prompt(candidate.prompt) for c in merged):
            merged.append(candidate)
    return merged[:keep]


async def record_proposals(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Join point after the level's selections and rewrites: store every proposal."""
    ctx = runtime.context
    if state.get("phase") == "validate":
        return {}  # the finalists are already in the run store with their search records
    for proposal in state.get("proposals", []):
        ctx.recorder.record_candidate(
            ctx.run_id, proposal.candidate, state.get("level", 0), None, survived=False
        )
    return {}


async def beam_select(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Score the level's proposals and keep the best as the next beam."""
    ctx = runtime.context
    search = ctx.settings.search
    level = state["level"]
    scores = state.get("scores", [])
    # A person's reject (or edit, which replaces the proposal) takes a candidate out of the race.
    excluded = {
        cid for cid, d in state.get("reviewed", {}).items() if d.decision in ("reject", "edit")
    }
    proposals = [
        p
        for p in unique_proposals(state.get("proposals", []), search.dedupe)
        if p.candidate.id not in excluded
    ]
    rewards = level_rewards(scores)
    children = [
        p.candidate.model_copy(
            update={"path_rewards": (*p.candidate.path_rewards, rewards[p.candidate.id])}
        )
        for p in proposals
        if p.candidate.id in rewards
    ]
    beam = rank(children)[: search.width]
    if not beam:
        # Nothing at this level could be scored (e.g. the judge failed throughout): keep the
        # previous beam so the search can go on with the next queries.
        beam = list(state.get("parents") or state["beam"])
    survivors = {c.id for c in beam}
    for proposal in state.get("proposals", []):
        if proposal.candidate.id in excluded:
            ctx.recorder.record_candidate(
                ctx.run_id,
                proposal.candidate,
                level,
                rewards.get(proposal.candidate.id),
                survived=False,
            )
    for proposal in proposals:
        scored = next((c for c in children if c.id == proposal.candidate.id), proposal.candidate)
        ctx.recorder.record_candidate(
            ctx.run_id,
            scored,
            level,
            rewards.get(proposal.candidate.id),
            survived=proposal.candidate.id in survivors,
        )
    # Computed from the level's starting count, so re-ranking after a review stays idempotent.
    extensions = state.get("extensions_before_level", state.get("extensions", 0))
    if level > 0 and any(p.skipped for p in proposals) and extensions < search.max_extension:
        extensions += 1
    depth_limit = search.depth + extensions
    previous = [c for c in state.get("leaders", []) if c.id not in excluded]
    leaders = merge_leaders(previous, children, max(search.finalists, 1))
    feedback = {c.id: fb for c in beam if (fb := worst_feedback(scores, c.id)) is not None}
    if leaders:
        ctx.recorder.update_run(
            ctx.run_id, best_candidate_id=leaders[0].id, train_value=leaders[0].value
        )
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
        "leaders": leaders,
        "depth_limit": depth_limit,
        "extensions": extensions,
    }
