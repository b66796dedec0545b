"""Rewrite: the optimizer proposes new system prompts for one beam candidate (the MDP's action)."""

from __future__ import annotations

import hashlib
from typing import Any

from langgraph.runtime import Runtime

from drpo.backends.errors import StructuredOutputError
from drpo.backends.llm import call_scope
from drpo.nodes.context import RunContext
from drpo.nodes.judging import all_perfect, critique_text
from drpo.prompts.judge import fence
from drpo.prompts.optimizer import REWRITE_PROMPT, PromptProposal
from drpo.state.graph_state import RewriteTask
from drpo.state.types import Candidate, Proposal


def child_id(parent: Candidate, level: int, index: int) -> str:
    """Deterministic ids, so a resumed level re-creates the same candidates."""
    digest = hashlib.sha256(f"{parent.id}/{level}/{index}".encode()).hexdigest()[:6]
    return f"L{level}-{digest}"


def should_skip(candidate: Candidate, task: RewriteTask, threshold: float) -> bool:
    """The paper's skip rule: a prompt already scoring above the threshold is carried forward."""
    feedback = task["last_feedback"]
    last = candidate.path_rewards[-1] if candidate.path_rewards else None
    # A threshold of 5 turns the rule off (for judges that rate nearly everything 5).
    return threshold < 5.0 and (
        (last is not None and last > threshold)
        or (feedback is not None and all_perfect(feedback.judgement))
    )


def _child(
    parent: Candidate, level: int, index: int, prompt: str, history: int, carried: bool
) -> Candidate:
    ancestry = (*parent.ancestry, parent.prompt)[-history:] if history else ()
    return Candidate(
        id=child_id(parent, level, index),
        prompt=prompt,
        parent_id=parent.id,
        depth=parent.depth + 1,
        path_rewards=parent.path_rewards,
        ancestry=ancestry,
        carried=carried,
    )


async def rewrite(task: RewriteTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Propose edits of one beam prompt from its feedback, within the budget."""
    runtime.context.check_budget()
    with call_scope("search", task["level"]):
        return await _rewrite(task, runtime.context)


async def _rewrite(task: RewriteTask, ctx: RunContext) -> dict[str, Any]:
    search = ctx.settings.search
    parent = task["candidate"]
    level = task["level"]
    feedback = task["last_feedback"]
    skipped = feedback is not None and should_skip(parent, task, search.skip_threshold)
    if feedback is None or skipped:
        carried = _child(parent, level, 0, parent.prompt, search.history, carried=True)
        proposal = Proposal(candidate=carried, parent_feedback=feedback, skipped=skipped)
        return {"proposals": [proposal]}
    history = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(parent.ancestry)) or "(none)"
    system, user = REWRITE_PROMPT.render(
        max_new_bullets=str(search.max_new_bullets),
        max_bullets=str(search.max_bullets),
        prompt=parent.prompt,
        history=history,
        query=fence(feedback.query),
        answer=fence(feedback.answer),
        critique=critique_text(feedback.judgement),
    )
    try:
        replies = await ctx.models["optimizer"].structured(
            system,
            user,
            PromptProposal,
            n=search.actions,
            sample_key=f"{parent.id}/L{level}",
            tag=f"rewrite:{parent.id}:L{level}",
        )
        prompts = [reply.prompt.strip() for reply in replies]
    except StructuredOutputError:
        # The optimizer failed for this beam: keep the prompt in the race rather than losing
        # the branch; the failed calls are in the run store.
        prompts = []
    if not prompts:
        carried = _child(parent, level, 0, parent.prompt, search.history, carried=True)
        return {"proposals": [Proposal(candidate=carried, parent_feedback=feedback)]}
    children = [
        _child(parent, level, index, prompt, search.history, carried=False)
        for index, prompt in enumerate(prompts)
    ]
    return {"proposals": [Proposal(candidate=c, parent_feedback=feedback) for c in children]}
