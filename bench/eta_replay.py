"""Replay a finished run's calls through the ETA clock: the ETA after each call vs the real end.

    python bench/eta_replay.py RUN [--store drpo-runs/runs.db] [--finished-only] [--calls-only]
                                   [--every] [--priors] [--explain N]

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

`--explain N` attributes the error after call N: per role, the calls the clock still expects
against those the run then made, the seconds per call it predicts against their mean latency
(and what the predicted rates give on the calls' actual tokens, which separates a token error
from a speed error), and the concurrency it divides by against the one the rest of the run had
(the remaining calls' latency, counted from N on, over the time left).
"""

from __future__ import annotations

import argparse
import json
import sys
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


def _after(rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The calls that end after `now` (the ones the clock's remaining time is about)."""
    return [r for r in rows if r["started_at"] + (r["latency"] or 0.0) > now]


def _explain(clock: RunClock, now: float, rows: list[dict[str, Any]], end: float) -> None:
    """Print where the predicted remaining time differs from what the run then did."""
    later = _after(rows, now)
    planned = clock.planned(clock.rejected_share())
    print(
        " role       calls left pred/actual   s/call pred/actual (pred rates on actual tokens)"
        "   tokens/call pred p+c / actual p+c   work pred/actual (s)"
    )
    work_pred = work_act = work_counted = 0.0
    for role in sorted(set(planned) | {r["role"] for r in later}):
        mine = [r for r in later if r["role"] == role]
        left = max(0.0, planned.get(role, 0.0) - clock.done.get(role, 0))
        per_call = clock.seconds_per_call(role) or 0.0  # type: ignore[arg-type]
        prompt, completion = clock.expected_tokens(role)  # type: ignore[arg-type]
        paid = [r for r in mine if r["outcome"] == "ok"]
        seconds = sum(r["started_at"] + r["latency"] - max(r["started_at"], now) for r in paid)
        mean = sum(r["latency"] for r in mine) / len(mine) if mine else 0.0
        act_p = _mean(paid, lambda r: r["prompt_tokens"] - (r["cached_tokens"] or 0))
        act_c = _mean(paid, lambda r: r["completion_tokens"])
        at_rates = clock.seconds_for(role, act_p, act_c) if paid else 0.0  # type: ignore[arg-type]
        work_pred += left * per_call
        work_counted += len(mine) * per_call
        work_act += seconds
        print(
            f" {role:9}  {left:6.1f} / {len(mine):<3d}          {per_call:6.1f} / {mean:6.1f}"
            f" ({at_rates:6.1f})                     {prompt:5.0f}+{completion:<4.0f}/"
            f" {act_p:5.0f}+{act_c:<4.0f}            {left * per_call:6.0f} / {seconds:6.0f}"
        )
    in_flight = sum(done for _, done, _ in clock.in_flight_work(now))
    concurrency = clock.concurrency(now)
    left_s = max(end - now, 1e-9)  # after the last call nothing is left: no concurrency
    print(
        f" work {work_pred:.0f} s (less {in_flight:.0f} s in flight) / {work_act:.0f} s;"
        f" concurrency {concurrency:.2f} / {work_act / left_s:.2f};"
        f" remaining {(work_pred - in_flight) / concurrency:.0f} s / {left_s:.0f} s"
    )
    # The same prediction had it known how many calls were left: what remains is the error of
    # the seconds per call and the concurrency together (they move together on a busy server).
    print(
        f" remaining at the actual calls left: {(work_counted - in_flight) / concurrency:.0f} s;"
        f" actual calls left per stage: {_per_stage(later)}"
    )


def _per_stage(rows: list[dict[str, Any]]) -> str:
    stages: dict[str, int] = {}
    for r in rows:
        stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    return ", ".join(f"{stage} {count}" for stage, count in stages.items())


def _mean(rows: list[dict[str, Any]], value: Any) -> float:
    return sum(value(r) for r in rows) / len(rows) if rows else 0.0


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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
    parser.add_argument("--explain", type=int, metavar="N")
    args = parser.parse_args()
    if args.explain is not None and args.explain < 1:
        _refuse("--explain takes a call number from 1")
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
        if counted == args.explain:
            _explain(clock, now, [r for r in rows if r["outcome"] != "error"], end)
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
    if args.explain is not None and args.explain > counted:
        _refuse(f"--explain {args.explain}: the run has {counted} calls")


if __name__ == "__main__":
    main()
