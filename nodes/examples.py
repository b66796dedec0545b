"""Stage A: optimize the in-context examples (critique, rewrite, keep the best answer).

Each example is its own task, so examples are optimized in parallel and each finished example is
checkpointed on its own. Within a task the rounds are sequential: round r rewrites the best
answer so far from its critique, `beam_width` times, and keeps a rewrite only if it scores
higher (the best, not the latest, survives).
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from drpo.backends.errors import StructuredOutputError
from drpo.backends.llm import call_scope
from drpo.nodes.context import RunContext
from drpo.nodes.judging import all_perfect, critique_text, judge_answer
from drpo.nodes.select_rewards import choose_aspects
from drpo.prompts.judge import fence
from drpo.prompts.optimizer import REWRITE_ANSWER, ExampleRewrite
from drpo.state.graph_state import ExampleOutcome, ExampleTask, SearchState
from drpo.state.types import AspectSelection, Example, Judgement, Query

ANSWER_WORDS = 220


def _is_better(new: Judgement, old: Judgement) -> bool:
    if new.reward is None:
        return False
    return old.reward is None or new.reward > old.reward


async def optimize_example(task: ExampleTask, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Stage A: improve one in-context example's answer, within the budget."""
    runtime.context.check_budget()
    with call_scope("examples"):
        return await _optimize_example(task, runtime.context)


async def _optimize_example(task: ExampleTask, ctx: RunContext) -> dict[str, Any]:
    stage = ctx.settings.examples
    example = task["example"]
    if not ctx.settings.rewards.llm_aspects:
        # A metric-only run has no judge to critique an example answer (and the example is its
        # own reference), so the examples are used as given.
        outcome = ExampleOutcome(
            index=task["index"], example=example, original_reward=None, reward=None, rounds=0
        )
        return {"example_outcomes": [outcome]}
    query = Query(
        id=example.id,
        query=example.query,
        category=example.category,
        harmful=example.category == "harmful",
    )
    selection = await choose_aspects(ctx, query)
    best_answer = example.answer
    best = await judge_answer(
        ctx, example.query, best_answer, selection.aspects, tag=f"example:{example.id}:r0"
    )
    original_reward = best.reward
    rounds = 0
    for round_index in range(1, stage.rounds + 1):
        if all_perfect(best):
            break
        rounds = round_index
        best, best_answer = await _rewrite_round(
            ctx, example, selection, best, best_answer, round_index
        )
    improved = example.model_copy(update={"answer": best_answer})
    ctx.ledger.record_example(example, improved, original_reward, best.reward, rounds)
    outcome = ExampleOutcome(
        index=task["index"],
        example=improved,
        original_reward=original_reward,
        reward=best.reward,
        rounds=rounds,
    )
    return {"example_outcomes": [outcome]}


async def _rewrite_round(
    ctx: RunContext,
    example: Example,
    selection: AspectSelection,
    best: Judgement,
    best_answer: str,
    round_index: int,
) -> tuple[Judgement, str]:
    """One round: the optimizer rewrites the best answer so far; the best judged one wins."""
    system, user = REWRITE_ANSWER.render(
        max_words=str(ANSWER_WORDS),
        query=fence(example.query),
        answer=fence(best_answer),
        critique=critique_text(best),
    )
    try:
        rewrites = await ctx.models["optimizer"].structured(
            system,
            user,
            ExampleRewrite,
            n=ctx.settings.examples.beam_width,
            sample_key=f"{example.id}/r{round_index}",
            tag=f"example:{example.id}:r{round_index}",
        )
    except StructuredOutputError:
        return best, best_answer
    for rewrite_index, reply in enumerate(rewrites):
        answer = reply.answer.strip()
        verdict = await judge_answer(
            ctx,
            example.query,
            answer,
            selection.aspects,
            tag=f"example:{example.id}:r{round_index}.{rewrite_index}",
        )
        if _is_better(verdict, best):
            best, best_answer = verdict, answer
    return best, best_answer


async def collect_examples(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Replace each optimized example in the seed set, keeping the seed order."""
    improved = {o.index: o.example for o in state.get("example_outcomes", [])}
    examples: list[Example] = [
        improved.get(index, example) for index, example in enumerate(state["examples"])
    ]
    return {"examples": examples, "phase": "search"}
