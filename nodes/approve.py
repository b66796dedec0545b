"""Approve: a person reviews the level's surviving prompt edits, or the final prompt.

The node calls `interrupt()` before anything else happens: on resume LangGraph re-runs it from
the top and replays the decisions already given, so nothing here may call a model or write to
the run store before the last interrupt. The LLM call that proposed an edit ran in `rewrite`,
an earlier node, and is never repeated.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from drpo.nodes.context import RunContext
from drpo.nodes.generate import scoring_tasks
from drpo.nodes.policy import baseline_value, needs_review, next_after_level, validated
from drpo.state.graph_state import SearchState
from drpo.state.types import (
    Candidate,
    Proposal,
    ReviewDecision,
    ReviewRequest,
    ReviewScore,
)


def prompt_diff(before: str, after: str) -> str:
    """A unified diff from the parent prompt to the proposed one."""
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "parent", "proposed", lineterm=""
    )
    return "\n".join(lines)


def _evidence(state: SearchState, candidate: Candidate) -> tuple[ReviewScore, ...]:
    return tuple(
        ReviewScore(
            query=s.feedback.query,
            answer=s.feedback.answer,
            reward=s.reward,
            scores=s.feedback.judgement.scores,
        )
        for s in state.get("scores", [])
        if s.candidate_id == candidate.id
    )


def review_request(
    state: SearchState, candidate: Candidate, position: int, pending: int, ctx: RunContext
) -> ReviewRequest:
    """The review payload for one candidate: prompts, diff, values and cost so far."""
    parents = {p.id: p for p in state.get("parents", [])}
    parent = parents.get(candidate.parent_id or "")
    if state["phase"] == "validate":
        parent_prompt = ctx.settings.search.initial_prompt
        ranking = validated(state, ctx.settings)
        value = dict((c.id, v) for c, v in ranking).get(candidate.id)
        parent_value = baseline_value(ranking, ctx.settings, besides=candidate.id)
    else:
        parent_prompt = parent.prompt if parent else ""
        value = candidate.path_rewards[-1] if candidate.path_rewards else None
        parent_value = parent.path_rewards[-1] if parent and parent.path_rewards else None
    cost = ctx.ledger.cost()  # a read: safe to repeat when the node re-runs
    return ReviewRequest(
        kind="final" if state["phase"] == "validate" else "edit",
        run_id=ctx.run_id,
        candidate_id=candidate.id,
        parent_id=candidate.parent_id,
        level=state["level"],
        prompt=candidate.prompt,
        parent_prompt=parent_prompt,
        diff=prompt_diff(parent_prompt, candidate.prompt),
        value=value,
        parent_value=parent_value,
        evidence=_evidence(state, candidate),
        calls=cost.calls,
        tokens=cost.tokens,
        position=position,
        pending=pending,
    )


def edited_candidate(original: Candidate, prompt: str) -> Candidate:
    """A person's edit as a candidate in the original's place in the tree."""
    # The edit takes the original's place in the tree: same parent, same path so far.
    return original.model_copy(
        update={
            "id": f"{original.id}-edit",
            "prompt": prompt.strip(),
            "path_rewards": original.path_rewards[:-1],
            "carried": False,
        }
    )


async def approve(state: SearchState, runtime: Runtime[RunContext]) -> Command[Any]:
    """Ask a person about each pending candidate (interrupting first), then apply the decisions."""
    ctx = runtime.context
    pending = needs_review(state, ctx.settings)
    decisions: list[ReviewDecision] = []
    for position, candidate in enumerate(pending, start=1):
        answer = interrupt(review_request(state, candidate, position, len(pending), ctx))
        decision = ReviewDecision.model_validate(answer)
        decisions.append(decision)
        if decision.decision == "stop":
            break
    # Past the last interrupt: the decisions are final, so they can be recorded.
    for decision in decisions:
        ctx.ledger.record_decision(
            decision.candidate_id, decision.decision, decision.comment, decision.prompt
        )
    reviewed = {d.candidate_id: d for d in decisions}
    stop = any(d.decision == "stop" for d in decisions)
    update: dict[str, Any] = {"reviewed": reviewed}
    if stop:
        update["stop_requested"] = True
    by_id = {c.id: c for c in pending}
    edits = [
        edited_candidate(by_id[d.candidate_id], d.prompt or "")
        for d in decisions
        if d.decision == "edit"
    ]
    validating = state["phase"] == "validate"
    if edits and not stop:
        for edit in edits:
            reviewed[edit.id] = ReviewDecision(
                candidate_id=edit.id, decision="approve", comment="written by the reviewer"
            )
        proposals = [Proposal(candidate=e) for e in edits]
        update["proposals"] = proposals
        stage: Literal["search", "validate"] = "validate" if validating else "search"
        return Command(update=update, goto=scoring_tasks(state, proposals, stage))
    if validating:
        if any(d.decision == "reject" for d in decisions) and not stop:
            return Command(update=update, goto="approve")
        everything = {**state.get("reviewed", {}), **reviewed}
        update["final_choice"] = next(
            (cid for cid, d in everything.items() if d.decision == "approve"), None
        )
        return Command(update=update, goto="finalize")
    if any(d.decision == "reject" for d in decisions):
        # Re-rank without the rejected prompts; the next ones up are reviewed in turn.
        return Command(update=update, goto="beam_select")
    return Command(update=update, goto=next_after_level({**state, **update}))  # type: ignore[typeddict-item]
