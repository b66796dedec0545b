"""Replay a finished run's calls through the ETA clock: the ETA after each call vs the real end.

    python bench/eta_replay.py RUN [--store drpo-runs/runs.db]

For issue #16's check ("after the first 5 calls, the ETA lies within ±30 % of the actual end"): the
run's own `llm_calls` rows, in the order they finished, are fed to `RunClock` as the progress
display feeds it, and the predicted end (finish time + remaining) is printed against the real one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sqlite_utils

from drpo.graph.api import load_run_data, run_rubric
from drpo.nodes.estimate import estimate_run
from drpo.nodes.eta import RunClock
from drpo.state.events import CallFinished
from drpo.state.settings import DEFAULT_STORE, settings_from_stored


def main() -> None:
    """Print the ETA the clock gave after each finished call, and its error against the real end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    args = parser.parse_args()
    db = sqlite_utils.Database(args.store)
    run = db["runs"].get(args.run)
    settings = settings_from_stored(json.loads(run["settings"]))
    clock = RunClock(estimate_run(settings, load_run_data(settings), run_rubric(settings)))
    rows = list(
        db.query(
            "select * from llm_calls where run_id = ? and outcome in ('ok', 'cache_hit')",
            [args.run],
        )
    )
    rows.sort(key=lambda r: r["started_at"] + (r["latency"] or 0))
    start = min(r["started_at"] for r in rows)
    end = max(r["started_at"] + (r["latency"] or 0) for r in rows)
    print(
        f"run {args.run}: {len(rows)} calls, {end - start:.0f} s "
        "from the first call's start to the last one's end"
    )
    print(" call  at (s)  predicted end (s)  error")
    for index, row in enumerate(rows, 1):
        now = row["started_at"] + (row["latency"] or 0)
        clock.call_finished(
            CallFinished(
                role=row["role"],
                model=row["model"],
                endpoint=row["endpoint"],
                outcome=row["outcome"],
                prompt_tokens=row["prompt_tokens"] or 0,
                completion_tokens=row["completion_tokens"] or 0,
                cached_tokens=row["cached_tokens"] or 0,
                seconds=row["latency"] or 0.0,
            ),
            now,
        )
        left = clock.remaining(now)
        if left is None:
            continue
        predicted = now - start + left
        actual = end - start
        print(
            f"{index:5d}  {now - start:6.0f}  {predicted:17.0f}  "
            f"{100 * (predicted - actual) / actual:+5.0f} %"
        )


if __name__ == "__main__":
    main()
