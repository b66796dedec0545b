"""Finalize: choose the final prompt and write the run's result.

By default the best prompts seen are re-scored on held-out validation queries and the best of
them wins; the `paper` preset keeps the released behaviour, the last prompt of the best path.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime

from drpo.nodes.beam import level_rewards
from drpo.nodes.context import RunContext
from drpo.state.graph_state import SearchState
from drpo.state.types import Candidate, RunResult


def pick_final(state: SearchState, mode: str) -> tuple[Candidate, float | None]:
    """Return the final candidate and, when it was validated, its validation value."""
    beam = state.get("beam", [])
    leaders = state.get("leaders", []) or beam
    if mode == "last_on_best_path":
        return beam[0], None
    validated = [(c, v) for c, v in _validated(state) if c.id != "baseline"]
    if not validated:
        return leaders[0], None
    # Ties on validation fall back to the training path value.
    best, value = max(validated, key=lambda pair: (pair[1], pair[0].value))
    return best, value


async def finalize(state: SearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    best, validation_value = pick_final(state, ctx.settings.search.final)
    baseline_value = next(
        (v for c, v in _validated(state) if c.prompt == ctx.settings.search.initial_prompt), None
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


def _validated(state: SearchState) -> list[tuple[Candidate, float]]:
    """The finalists with their mean validation reward, when a validation round ran."""
    if state.get("phase") != "validate":
        return []
    values = level_rewards(state.get("scores", []))
    return [
        (p.candidate, values[p.candidate.id])
        for p in state.get("proposals", [])
        if p.candidate.id in values
    ]
