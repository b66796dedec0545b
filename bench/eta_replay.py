"""Replay a finished run's calls through the ETA clock: the ETA after each call vs the real end.

    python bench/eta_replay.py RUN [--store drpo-runs/runs.db] [--finished-only] [--calls-only]
                                   [--every] [--priors]

For issue #16's check ("after the first 5 calls, the ETA lies within ±30 % of the actual end"): the
run's own `llm_calls` rows are fed to `RunClock` as the progress display feeds it, each request's
start (`CallStarted`) at its `started_at` and its end (`CallFinished`) at `started_at + latency`,
and the predicted end (finish time + remaining) is printed against the real one, after 5, 10 and
20 calls (`--every`: after each), with the range while the rejections are unknown. The run's
other facts come from its rows too: each rejected proposal (`ProposalRejected`) when its
`candidates` row was written, each level's end (`LevelDone`) when its scored children's were,
each stage A example's end (`optimize_example`, its calls are tagged with its id) and stage A's
(`collect_examples`) at the end of their last calls. `--calls-only` leaves those facts out (the
clock then counts the estimate's maximum); `--finished-only` also feeds no starts, as a caller
that does not report them would, so the concurrency comes from finished calls alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import sqlite_utils

from drpo.cli.progress import stored_call
from drpo.graph.api import load_run_data, stored_rubric
from drpo.nodes.estimate import estimate_run
from drpo.nodes.eta import RunClock
from drpo.state.settings import DEFAULT_STORE, settings_from_stored

CHECKPOINTS = (5, 10, 20)


Timeline = list[tuple[float, int, dict[str, Any]]]


def _timeline(rows: list[dict[str, Any]], starts: bool) -> Timeline:
    """(time, 0 = start / 1 = end / 2 = other fact, row), in time order; starts before ends."""
    events = [(r["started_at"] + (r["latency"] or 0.0), 1, r) for r in rows]
    if starts:
        events += [(r["started_at"], 0, r) for r in rows if r["outcome"] in ("ok", "error")]
    return events


def _facts(rows: list[dict[str, Any]], candidates: list[dict[str, Any]]) -> Timeline:
    """Stage A's end, each rejection and each level's end, when the run learnt them."""
    examples = [r["started_at"] + (r["latency"] or 0.0) for r in rows if r["stage"] == "examples"]
    facts: Timeline = [(max(examples), 2, {"fact": "stage_a"})] if examples else []
    # An example ends with its last call (tagged `select:ID` or `example:ID:…`).
    ends: dict[str, float] = {}
    for r in rows:
        if r["stage"] == "examples" and r["tag"]:
            example = r["tag"].split(":")[1]
            ends[example] = max(ends.get(example, 0.0), r["started_at"] + (r["latency"] or 0.0))
    facts += [(end, 2, {"fact": "example"}) for end in ends.values()]
    scored: dict[int, list[dict[str, Any]]] = {}
    for row in candidates:
        if row["rejected"]:
            facts.append((row["created_at"], 2, {"fact": "rejected", **row}))
        elif row["level_reward"] is not None:
            scored.setdefault(row["level"], []).append(row)
    # The root is recorded before its level is scored: that level ends as level 1's rewrites begin.
    rewrites = [r["started_at"] for r in rows if r["role"] == "optimizer" and r["level"] == 1]
    for level, children in scored.items():
        at = min(rewrites, default=0.0) if level == 0 else max(c["created_at"] for c in children)
        beam = {c["id"]: c["level_reward"] for c in children if c["survived"]}
        facts.append((at, 2, {"fact": "level", "level": level, "children": children, "beam": beam}))
    return facts


def _apply(clock: RunClock, fact: dict[str, Any]) -> None:
    if fact["fact"] == "stage_a":
        clock.stage_a_finished()
    elif fact["fact"] == "example":
        clock.example_finished()
    elif fact["fact"] == "rejected":
        clock.proposal_rejected(fact["level"], fact["parent_id"] or "")
    else:
        clock.level_finished(fact["level"], len(fact["children"]), fact["beam"])


def _percent(predicted: float, actual: float) -> str:
    return f"{100 * (predicted - actual) / actual:+.0f} %"


def main() -> None:
    """Print the ETA the clock gave after finished calls, and its error against the real end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--finished-only", action="store_true")
    parser.add_argument("--calls-only", action="store_true")
    parser.add_argument("--every", action="store_true")
    # A role without calls of its own expects the stored default runs' fill and cache share.
    parser.add_argument("--priors", action="store_true")
    args = parser.parse_args()
    db = sqlite_utils.Database(args.store)
    run = db["runs"].get(args.run)
    settings = settings_from_stored(json.loads(run["settings"]))
    estimate = estimate_run(settings, load_run_data(settings), stored_rubric(run))
    clock = RunClock(estimate, priors=args.priors)
    rows = list(
        db.query(
            "select * from llm_calls where run_id = ? and outcome in ('ok', 'cache_hit', 'error')",
            [args.run],
        )
    )
    candidates = list(db.query("select * from candidates where run_id = ?", [args.run]))
    start = min(r["started_at"] for r in rows)
    end = max(r["started_at"] + (r["latency"] or 0) for r in rows)
    actual = end - start
    print(f"run {args.run}: {len(rows)} calls, {actual:.0f} s from the first start to the last end")
    print(" call  at (s)  predicted end (s)  error   range of the end (s)  range error")
    timeline = _timeline(rows, starts=not args.finished_only)
    if not args.calls_only:
        timeline += _facts(rows, candidates)
    timeline.sort(key=lambda e: (e[0], e[1]))
    counted = 0
    for now, kind, row in timeline:
        if kind == 0:
            clock.call_started(now, row["role"])
            continue
        if kind == 2:
            _apply(clock, row)
            continue
        clock.call_finished(stored_call(row), now)
        if row["outcome"] == "error":
            continue
        counted += 1
        eta = clock.eta(now)
        if eta is None or not (args.every or counted in CHECKPOINTS):
            continue
        predicted = now - start + eta.seconds
        line = (
            f"{counted:5d}  {now - start:6.0f}  {predicted:17.0f}  {_percent(predicted, actual):>6}"
        )
        if eta.low is not None and eta.high is not None:
            low, high = now - start + eta.low, now - start + eta.high
            line += (
                f"  {low:9.0f}–{high:<9.0f}  {_percent(low, actual)} to {_percent(high, actual)}"
            )
        print(line)


if __name__ == "__main__":
    main()
