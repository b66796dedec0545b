"""SIGKILL a run at 20 seeded random points across both stages, resume each, compare results.

Kill points come from a census of an uninterrupted reference run (tests/support/kill_switch.py
logs every paid call and every run-store and checkpoint commit, with the stage it belongs to).
Five kinds of kill, each at four stages (a Latin square over stage A, levels 0–2, validation):

- `llm`: SIGKILL from outside while model calls are in flight (the stub sleeps per call);
- `paid`: the process kills itself right after a paid call's reply and record are committed;
- `store-torn`: inside a run-store transaction, after its statements and before COMMIT;
- `ckpt-torn`: inside a checkpoint commit, before it reaches the disk;
- `ckpt`: right after a checkpoint commit.

Each killed run is resumed with `drpo resume`; its final result (run row, candidates, answers,
judgements, examples) must equal the reference run's, and no call that had completed (an `ok`
row in `llm_calls`) may be paid for again. The 20 cycles run two at a time (each has its own
stub process and files), so the module takes about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from run_results import comparable_result, paid_keys
from stub_runs import DRPO, SCRIPT, SUPPORT, optimize_args
from stub_server import StubProcess, count_records

from drpo.checkpoints.store import RunStore

pytestmark = pytest.mark.integration

KILL_SWITCH = [sys.executable, str(SUPPORT / "kill_switch.py")]
SEED = 20261127
POINTS = 20
KINDS = ("llm", "paid", "store-torn", "ckpt-torn", "ckpt")
STAGES = ("stage A", "level 0", "level 1", "level 2", "validation")
LATENCY = 0.05  # seconds per stub call: long enough for outside kills to land mid-call
TIMEOUT = 120


def small_run(url: str, folder: Path) -> list[str]:
    """A small run that still has every stage: 2 examples, 3 levels, 2 validation queries."""
    return optimize_args(url, folder, concurrency=4)


def stage_of(tag: str, previous: str) -> str:
    """The stage a model call's tag belongs to (a selector call starts the next level)."""
    if tag.startswith("example:") or tag.startswith("select:ex-"):
        return "stage A"
    if tag.endswith(":validate") or tag.startswith("select:va-"):
        return "validation"
    if tag.startswith("select:tr-"):
        level = int(previous.split()[-1]) + 1 if previous.startswith("level") else 0
        return f"level {level}"
    match = re.search(r":L(\d+)$", tag) or re.search(r":L(\d+)-", tag)
    return f"level {match.group(1)}" if match else previous


@dataclass(frozen=True)
class KillPoint:
    """Where one cycle kills the run: a kind of event, its index, and the stage it falls in."""

    index: int
    kind: str
    n: int
    stage: str

    @property
    def label(self) -> str:
        return f"{self.index:02d}-{self.kind}-{self.stage.replace(' ', '')}-n{self.n}"


@dataclass
class Reference:
    """The uninterrupted run: its comparable result and the census of its events."""

    result: dict[str, Any]
    paid: int
    events: dict[tuple[str, str], list[int]] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one kill-and-resume cycle observed."""

    point: KillPoint
    kill_code: int | None = None
    status_after_kill: str = ""
    completed_before: set[str] = field(default_factory=set)
    resume_code: int | None = None
    resume_stderr: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    paid_keys: list[str] = field(default_factory=list)
    integrity: tuple[str, str] = ("", "")
    stub_calls: int = 0
    error: str = ""


def integrity(path: Path) -> str:
    """SQLite's own check of a database file after a kill."""
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("pragma integrity_check").fetchone()[0])
    finally:
        connection.close()


def read_census(path: Path) -> dict[tuple[str, str], list[int]]:
    """Group the census's events by (kind, stage); the first, tagless writes are left out."""
    events: dict[tuple[str, str], list[int]] = {}
    stage = tag = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if not event["tag"]:
            continue  # before the first call: the run row may not even exist yet
        if event["tag"] != tag:  # writes after a call carry its tag: same stage
            tag = event["tag"]
            stage = stage_of(tag, stage)
        events.setdefault((event["kind"], stage), []).append(event["n"])
    # An outside kill counts the stub's replies, which arrive in the order calls are paid.
    for (kind, stage_name), numbers in list(events.items()):
        if kind == "paid":
            events[("llm", stage_name)] = numbers
    return events


def plan(reference: Reference) -> list[KillPoint]:
    """Twenty seeded points: each kind at four stages, each stage with four kinds."""
    rng = random.Random(SEED)
    points = []
    for index in range(POINTS):
        kind = KINDS[index % len(KINDS)]
        stage = STAGES[(index + index // len(KINDS)) % len(STAGES)]
        choices = reference.events.get((kind, stage), [])
        if kind == "llm":
            choices = [n for n in choices if n < reference.paid]  # the process is still busy
        assert choices, f"the reference run has no {kind} event in {stage}"
        points.append(KillPoint(index, kind, rng.choice(choices), stage))
    return points


def kill_and_resume(point: KillPoint, folder: Path) -> Outcome:
    """Run until the kill point, SIGKILL, resume, and collect what the checks need."""
    outcome = Outcome(point)
    record = folder / "calls.jsonl"
    with StubProcess(SCRIPT, record=record, latency=LATENCY) as stub:
        args = small_run(stub.base_url, folder)
        if point.kind == "llm":
            process = subprocess.Popen(
                [*DRPO, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            deadline = time.monotonic() + TIMEOUT
            while count_records(record) < point.n and process.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
            outcome.kill_code = process.returncode
        else:
            spec = f"{point.kind}:{point.n}"
            done = subprocess.run(
                [*KILL_SWITCH, spec, *args], capture_output=True, text=True, timeout=TIMEOUT
            )
            outcome.kill_code, stderr = done.returncode, done.stderr
        if outcome.kill_code != -signal.SIGKILL:
            outcome.error = f"the run was not killed (exit {outcome.kill_code}): {stderr[-2000:]}"
            return outcome
        outcome.integrity = (integrity(folder / "runs.db"), integrity(folder / "ck.db"))
        run_id, before = paid_keys(folder / "runs.db")
        outcome.completed_before = set(before)
        store = RunStore(folder / "runs.db")
        row = store.run(run_id)
        store.close()
        outcome.status_after_kill = row["status"] if row else ""
        # A kill after finalize committed the result leaves nothing to resume: `drpo resume`
        # must say so (exit 2), and the stored result must already be the reference's.
        resumed = subprocess.run(
            [*DRPO, "resume", run_id, "--store", str(folder / "runs.db")],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        outcome.resume_code, outcome.resume_stderr = resumed.returncode, resumed.stderr
        outcome.stub_calls = stub.count()
    if resumed.returncode == 0 or outcome.status_after_kill == "completed":
        outcome.result = comparable_result(folder / "runs.db")
        outcome.paid_keys = paid_keys(folder / "runs.db")[1]
    return outcome


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Run once without a kill, counting every event the kill points are drawn from."""
    folder = tmp_path_factory.mktemp("reference")
    census = folder / "census.jsonl"
    with StubProcess(SCRIPT, record=folder / "calls.jsonl", latency=LATENCY) as stub:
        done = subprocess.run(
            [*KILL_SWITCH, f"census:{census}", *small_run(stub.base_url, folder)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        calls = stub.count()
    _, keys = paid_keys(folder / "runs.db")
    assert len(keys) == len(set(keys)) == calls, "an uninterrupted run pays each call once"
    return Reference(comparable_result(folder / "runs.db"), len(keys), read_census(census))


@pytest.fixture(scope="module")
def outcomes(
    reference: Reference, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[int, Outcome]]:
    """Run all twenty cycles, two at a time (each has its own stub process and files)."""
    points = plan(reference)
    folders = [tmp_path_factory.mktemp(p.label) for p in points]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(kill_and_resume, points, folders))
    yield {o.point.index: o for o in results}


def test_kill_points_cover_both_stages_and_every_kind(reference: Reference) -> None:
    points = plan(reference)
    assert len(points) == POINTS
    assert Counter(p.kind for p in points) == dict.fromkeys(KINDS, 4)
    assert Counter(p.stage for p in points) == dict.fromkeys(STAGES, 4)
    assert len({(p.kind, p.n) for p in points}) == POINTS


@pytest.mark.parametrize("index", range(POINTS))
def test_killed_run_resumes_to_the_same_result_paying_no_call_twice(
    index: int, outcomes: dict[int, Outcome], reference: Reference
) -> None:
    outcome = outcomes[index]
    assert not outcome.error, outcome.error
    assert outcome.kill_code == -signal.SIGKILL
    assert outcome.integrity == ("ok", "ok")
    if outcome.status_after_kill == "completed":
        assert outcome.resume_code == 2 and "already completed" in outcome.resume_stderr
    else:
        assert outcome.status_after_kill == "running", "a SIGKILL leaves no time to update it"
        assert outcome.resume_code == 0, outcome.resume_stderr
    assert outcome.result == reference.result
    paid = outcome.paid_keys
    repeated = [key for key, count in Counter(paid).items() if count > 1]
    assert not repeated, f"{len(repeated)} call(s) paid twice"
    assert outcome.completed_before <= set(paid)
    # Calls in flight at the kill are paid again (their replies never arrived), nothing else.
    assert outcome.stub_calls >= reference.paid
