"""Finalize: choose the final prompt and write the run's result.

By default the best prompts seen are re-scored on held-out validation queries and the best of
them wins; the `paper` preset keeps the released behaviour, the last prompt of the best path.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.approve import final_candidate, validated
from drpo.nodes.context import RunContext
from drpo.state.graph_state import SearchState
from drpo.state.types import Candidate, RunResult


async def finalize(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Pick the final prompt and record the run's result."""
    ctx = runtime.context
    initial = ctx.settings.search.initial_prompt
    # Without a person's choice this is the best validated prompt (or, in the paper preset, the
    # last prompt on the best path); if a person rejected every finalist, the starting prompt.
    best = final_candidate(state, ctx.settings) or Candidate(id="baseline", prompt=initial)
    values = {c.id: v for c, v in validated(state)} if state.get("phase") == "validate" else {}
    validation_value = values.get(best.id)
    baseline_value = (
        next((v for c, v in validated(state) if c.prompt == initial), None)
        if state.get("phase") == "validate"
        else None
    )
    cost = ctx.recorder.run_cost(ctx.run_id)
    status = "stopped" if state.get("stop_requested") else "completed"
    result = RunResult(
        run_id=ctx.run_id,
        status=status,
        prompt=best.prompt,
        candidate_id=best.id,
        train_value=best.value if best.path_rewards else None,
        validation_value=validation_value,
        baseline_validation_value=baseline_value,
        lineage=(*best.ancestry, best.prompt),
        examples=tuple(state.get("examples", [])),
        levels=state.get("level", 0),
        calls=int(cost.get("calls") or 0),  # type: ignore[call-overload]
        prompt_tokens=int(cost.get("prompt_tokens") or 0),  # type: ignore[call-overload]
        completion_tokens=int(cost.get("completion_tokens") or 0),  # type: ignore[call-overload]
        seconds=float(cost.get("seconds") or 0.0),  # type: ignore[arg-type]
    )
    ctx.recorder.update_run(
        ctx.run_id,
        status=status,
        best_candidate_id=best.id,
        train_value=result.train_value,
        validation_value=validation_value,
        baseline_validation_value=baseline_value,
        final_prompt=best.prompt,
        examples=json.dumps([e.model_dump() for e in result.examples]),
    )
    return {"result": result, "phase": "done"}
