"""Read a finished run back from the run store in a form two runs can be compared by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drpo.checkpoints.store import RunStore


def comparable_result(store_path: Path, run_id: str | None = None) -> dict[str, Any]:
    """Everything a run produced, minus run ids and timestamps.

    Without `run_id` the store must hold exactly one run.
    """
    store = RunStore(store_path)
    try:
        if run_id is None:
            (run,) = store.runs()
        else:
            run = store.run(run_id)
            assert run is not None, run_id
        run_id = run["id"]

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in store.db.execute(sql, [run_id]).fetchall())

        return {
            "status": run["status"],
            "run": {
                k: run[k]
                for k in (
                    "best_candidate_id",
                    "train_value",
                    "validation_value",
                    "baseline_validation_value",
                    "final_prompt",
                    "query_order",
                )
            },
            "candidates": rows(
                "select id, parent_id, depth, level, prompt, level_reward, value, carried, "
                "survived from candidates where run_id = ?"
            ),
            "answers": rows(
                "select id, candidate_id, query_id, answer, stage, level, reward from answers "
                "where run_id = ?"
            ),
            "judgements": rows(
                "select answer_id, aspect, score, rationale, error from judgements where run_id = ?"
            ),
            "examples": rows(
                "select example_id, answer, original_reward, reward, rounds from examples "
                "where run_id = ?"
            ),
        }
    finally:
        store.close()


def paid_keys(store_path: Path) -> tuple[str, list[str]]:
    """The run id and the cache keys of its paid (`ok`) calls, in order."""
    store = RunStore(store_path)
    try:
        (run,) = store.runs()
        return run["id"], [c["cache_key"] for c in store.calls(run["id"]) if c["outcome"] == "ok"]
    finally:
        store.close()
