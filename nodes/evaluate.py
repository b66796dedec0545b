"""Evaluate: the judge scores an answer on the query's selected aspects, the metric (if any) on
its own; reward = the weighted mean of the usable scores."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from drpo.backends.llm import call_scope
from drpo.nodes.context import RunContext
from drpo.nodes.generate import scope_of
from drpo.nodes.judging import judge_answer
from drpo.nodes.metric import score_answer
from drpo.state.graph_state import EvaluateTask
from drpo.state.types import Feedback, LevelScore


async def evaluate(task: EvaluateTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Judge one answer and add its score to the level."""
    ctx = runtime.context
    ctx.check_budget()
    query = task["query"]
    with call_scope(*scope_of(task)):
        judgement = await judge_answer(
            ctx,
            query.query,
            task["answer"],
            task["selection"].aspects,
            tag=f"judge:{task['answer_id']}",
            reference=query.reference,
        )
    if ctx.metric is not None:
        metric = await score_answer(
            ctx.metric,
            ctx.settings.rewards.metric_weight,
            query.query,
            task["answer"],
            query.reference,
        )
        judgement = judgement.model_copy(update={"metric": metric})
    ctx.ledger.record_judgement(task["answer_id"], judgement)
    score = LevelScore(
        candidate_id=task["proposal"].candidate.id,
        query_id=query.id,
        answer_id=task["answer_id"],
        reward=judgement.reward,
        feedback=Feedback(query=query.query, answer=task["answer"], judgement=judgement),
    )
    return {"scores": [score]}
