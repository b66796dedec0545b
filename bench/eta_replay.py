"""Replay a finished run's calls through the ETA clock: the ETA after each call vs the real end.

    python bench/eta_replay.py RUN [--store drpo-runs/runs.db] [--finished-only] [--every]

For issue #16's check ("after the first 5 calls, the ETA lies within ±30 % of the actual end"): the
run's own `llm_calls` rows are fed to `RunClock` as the progress display feeds it, each request's
start (`CallStarted`) at its `started_at` and its end (`CallFinished`) at `started_at + latency`,
and the predicted end (finish time + remaining) is printed against the real one, after 5, 10 and
20 calls (`--every`: after each). `--finished-only` feeds only the ends, as a caller that does not
report starts would, so the concurrency is then measured from finished calls alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import sqlite_utils

from drpo.graph.api import load_run_data, run_rubric
from drpo.nodes.estimate import estimate_run
from drpo.nodes.eta import RunClock
from drpo.state.events import CallFinished
from drpo.state.settings import DEFAULT_STORE, settings_from_stored

CHECKPOINTS = (5, 10, 20)


def _finished(row: dict[str, Any]) -> CallFinished:
    return CallFinished(
        role=row["role"],
        model=row["model"],
        endpoint=row["endpoint"],
        outcome=row["outcome"],
        prompt_tokens=row["prompt_tokens"] or 0,
        completion_tokens=row["completion_tokens"] or 0,
        cached_tokens=row["cached_tokens"] or 0,
        seconds=row["latency"] or 0.0,
    )


def _timeline(rows: list[dict[str, Any]], starts: bool) -> list[tuple[float, int, dict[str, Any]]]:
    """(time, 0 = start / 1 = end, row), in time order; a request's start before any end."""
    events = [(r["started_at"] + (r["latency"] or 0.0), 1, r) for r in rows]
    if starts:
        events += [(r["started_at"], 0, r) for r in rows if r["outcome"] in ("ok", "error")]
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def main() -> None:
    """Print the ETA the clock gave after finished calls, and its error against the real end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--finished-only", action="store_true")
    parser.add_argument("--every", action="store_true")
    args = parser.parse_args()
    db = sqlite_utils.Database(args.store)
    run = db["runs"].get(args.run)
    settings = settings_from_stored(json.loads(run["settings"]))
    clock = RunClock(estimate_run(settings, load_run_data(settings), run_rubric(settings)))
    rows = list(
        db.query(
            "select * from llm_calls where run_id = ? and outcome in ('ok', 'cache_hit', 'error')",
            [args.run],
        )
    )
    start = min(r["started_at"] for r in rows)
    end = max(r["started_at"] + (r["latency"] or 0) for r in rows)
    actual = end - start
    print(f"run {args.run}: {len(rows)} calls, {actual:.0f} s from the first start to the last end")
    print(" call  at (s)  predicted end (s)  error")
    counted = 0
    for now, is_end, row in _timeline(rows, starts=not args.finished_only):
        if not is_end:
            clock.call_started(now)
            continue
        clock.call_finished(_finished(row), now)
        if row["outcome"] == "error":
            continue
        counted += 1
        left = clock.remaining(now)
        if left is None or not (args.every or counted in CHECKPOINTS):
            continue
        predicted = now - start + left
        print(
            f"{counted:5d}  {now - start:6.0f}  {predicted:17.0f}  "
            f"{100 * (predicted - actual) / actual:+5.0f} %"
        )


if __name__ == "__main__":
    main()
