"""Generate: the base model answers a query under a candidate prompt and retrieved examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from drpo.backends.llm import call_scope
from drpo.nodes.context import RunContext
from drpo.prompts.base import format_base_prompt
from drpo.state.graph_state import EvaluateTask, GenerateTask, SearchState
from drpo.state.types import Proposal

# The scoring subgraph (generate → evaluate) that every (candidate, query) task runs on its own.
SCORE_NODE = "score"


def scoring_tasks(
    state: SearchState, proposals: Sequence[Proposal], stage: Literal["search", "validate"]
) -> list[Send]:
    """One scoring task per (proposal, query of the level): the level's whole fan-out."""
    selections = state.get("selections", {})
    retrieved = state.get("retrieved", {})
    return [
        Send(
            SCORE_NODE,
            GenerateTask(
                proposal=p,
                query=q,
                selection=selections[q.id],
                examples=retrieved.get(q.id, []),
                level=state["level"],
                stage=stage,
            ),
        )
        for p in proposals
        for q in state.get("level_queries", [])
    ]


def scope_of(task: GenerateTask | EvaluateTask) -> tuple[str, int | None]:
    """The accounting scope of a scoring task: validation calls belong to no level."""
    return task["stage"], task["level"] if task["stage"] == "search" else None


def answer_id(task: GenerateTask) -> str:
    """The id of one candidate's answer to one query in one stage."""
    return f"{task['proposal'].candidate.id}:{task['query'].id}:{task['stage']}"


async def generate(task: GenerateTask, runtime: Runtime[RunContext]) -> Command[str]:
    """Answer one query, record it, and hand it straight to its own evaluation task."""
    ctx = runtime.context
    ctx.check_budget()
    candidate = task["proposal"].candidate
    query = task["query"]
    prompt = format_base_prompt(
        candidate.prompt, task["examples"], query.query, mode=ctx.settings.base.mode
    )
    identifier = answer_id(task)
    with call_scope(*scope_of(task)):
        replies = await ctx.models["base"].text(
            prompt, tag=f"answer:{identifier}", sample_key=identifier
        )
    answer = replies[0].strip()
    ctx.ledger.record_answer(
        identifier,
        candidate.id,
        query.id,
        query.query,
        answer,
        task["stage"],
        task["level"],
    )
    evaluation: EvaluateTask = {
        "proposal": task["proposal"],
        "query": query,
        "selection": task["selection"],
        "level": task["level"],
        "stage": task["stage"],
        "answer_id": identifier,
        "answer": answer,
    }
    return Command(goto=Send("evaluate", evaluation))
