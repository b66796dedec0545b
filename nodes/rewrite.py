"""Rewrite: the optimizer proposes new system prompts for one beam candidate (the MDP's action)."""

from __future__ import annotations

import hashlib
from typing import Any

from langgraph.runtime import Runtime

from drpo.backends.errors import StructuredOutputError
from drpo.backends.llm import call_scope
from drpo.nodes.context import RunContext
from drpo.nodes.judging import all_perfect, critique_text
from drpo.nodes.policy import SKIP_RULE_OFF, child_ancestry
from drpo.nodes.refusal import refusing_sentence
from drpo.nodes.topic import topic_match
from drpo.prompts.judge import fence
from drpo.prompts.optimizer import REWRITE_CASE, REWRITE_PROMPT, PromptProposal
from drpo.state.graph_state import RewriteTask
from drpo.state.types import Candidate, Feedback, Proposal


def child_id(parent: Candidate, level: int, index: int) -> str:
    """Deterministic ids, so a resumed level re-creates the same candidates."""
    digest = hashlib.sha256(f"{parent.id}/{level}/{index}".encode()).hexdigest()[:6]
    return f"L{level}-{digest}"


def should_skip(candidate: Candidate, task: RewriteTask, threshold: float) -> bool:
    """The paper's skip rule: a prompt already scoring above the threshold is carried forward."""
    feedback = task["last_feedback"]
    last = candidate.path_rewards[-1] if candidate.path_rewards else None
    return threshold < SKIP_RULE_OFF and (
        (last is not None and last > threshold)
        or (feedback is not None and all_perfect(feedback.judgement))
    )


def _child(
    parent: Candidate, level: int, index: int, prompt: str, history: int, carried: bool
) -> Candidate:
    return Candidate(
        id=child_id(parent, level, index),
        prompt=prompt,
        parent_id=parent.id,
        depth=parent.depth + 1,
        path_rewards=parent.path_rewards,
        ancestry=child_ancestry(parent, history),
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
    cases = task.get("feedback_cases") or [feedback]
    system, user = REWRITE_PROMPT.render(
        max_new_bullets=str(search.max_new_bullets),
        max_bullets=str(search.max_bullets),
        prompt=parent.prompt,
        history=history,
        cases=render_cases(cases),
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
    children = [
        _child(parent, level, index, prompt, search.history, carried=False)
        for index, prompt in enumerate(prompts)
    ]
    children = general_children(ctx, children, parent, [c.query for c in cases], level)
    if not children:
        carried = _child(parent, level, 0, parent.prompt, search.history, carried=True)
        return {"proposals": [Proposal(candidate=carried, parent_feedback=feedback)]}
    return {"proposals": [Proposal(candidate=c, parent_feedback=feedback) for c in children]}


def render_cases(cases: list[Feedback]) -> str:
    """The feedback cases as numbered, fenced blocks for the rewrite prompt."""
    return "\n\n".join(
        REWRITE_CASE.render(
            number=str(number),
            query=fence(case.query),
            answer=fence(case.answer),
            critique=critique_text(case.judgement),
        )[1]
        for number, case in enumerate(cases, start=1)
    )


def general_children(
    ctx: RunContext, children: list[Candidate], parent: Candidate, queries: list[str], level: int
) -> list[Candidate]:
    """Drop the proposals that cannot serve every query, recording each with its reason.

    Such a proposal names a feedback query's topic, or itself refuses ("I am sorry, but I
    cannot assist with that request."), which the base model then says to every request.
    """
    kept: list[Candidate] = []
    for child in children:
        reason = rejection_reason(
            child.prompt, parent.prompt, queries, ctx.settings.search.max_topic_overlap
        )
        if reason is None:
            kept.append(child)
        else:
            # An upsert by id: a re-run of this task after a crash records the same row.
            ctx.ledger.record_rejected(child, level, reason)
    return kept


def rejection_reason(
    proposal: str, parent: str, queries: list[str], max_overlap: float
) -> str | None:
    """Why a proposed prompt is rejected, or None when it may compete.

    `max_overlap` 1.0 (the paper preset) turns both checks off, as it did the topic check.
    """
    if max_overlap >= 1.0:
        return None
    refusal = refusing_sentence(proposal)
    if refusal is not None and refusing_sentence(parent) != refusal:
        return f"the prompt itself refuses ({refusal!r})"
    match = topic_match(proposal, parent, queries, max_overlap)
    return None if match is None else match.reason()
