"""Finalize: choose the final prompt and write the run's result.

By default the best prompts seen are re-scored on held-out validation queries, beside the
starting prompt, and the best of them wins; when the starting prompt wins, the run says that no
better prompt was found and returns the starting prompt. The `paper` preset keeps the released
behaviour, the last prompt of the best path.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.nodes.policy import baseline_value, final_candidate, is_starting_prompt, validated
from drpo.state.graph_state import SearchState
from drpo.state.types import Candidate, RunResult


async def finalize(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Pick the final prompt and record the run's result."""
    ctx = runtime.context
    initial = ctx.settings.search.initial_prompt
    # Without a person's choice this is the best validated prompt (or, in the paper preset, the
    # last prompt on the best path); if a person rejected every finalist, the starting prompt.
    best = final_candidate(state, ctx.settings) or Candidate(id="baseline", prompt=initial)
    ranking = validated(state, ctx.settings) if state["phase"] == "validate" else []
    validation_value = dict((c.id, v) for c, v in ranking).get(best.id)
    baseline = baseline_value(ranking, ctx.settings)
    no_better = is_starting_prompt(best, ctx.settings)
    cost = ctx.ledger.cost()
    status = "stopped" if state["stop_requested"] else "completed"
    result = RunResult(
        run_id=ctx.run_id,
        status=status,
        prompt=best.prompt,
        candidate_id=best.id,
        train_value=best.value if best.path_rewards else None,
        validation_value=validation_value,
        baseline_validation_value=baseline,
        no_better_prompt=no_better,
        lineage=(*best.ancestry, best.prompt),
        examples=tuple(state["examples"]),
        levels=state["level"],
        calls=cost.calls,
        prompt_tokens=cost.prompt_tokens,
        completion_tokens=cost.completion_tokens,
        seconds=cost.seconds,
    )
    ctx.ledger.update_run(
        status=status,
        best_candidate_id=best.id,
        train_value=result.train_value,
        validation_value=validation_value,
        baseline_validation_value=baseline,
        no_better_prompt=no_better,
        final_prompt=best.prompt,
        examples=json.dumps([e.model_dump() for e in result.examples]),
    )
    return {"result": result, "phase": "done"}
