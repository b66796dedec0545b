"""Human review across processes: interrupt, exit, decide in a new process, fork."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run_drpo
from scripted_llm import ROOT
from stub_runs import SCRIPT, optimize_args
from stub_server import StubProcess, count_records

from drpo.checkpoints.store import RunStore
from drpo.graph.review import pending_request

pytestmark = pytest.mark.integration


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubProcess]:
    with StubProcess(SCRIPT, record=tmp_path / "calls.jsonl") as process:
        yield process


def drpo(*args: str, check_code: int | None = None) -> subprocess.CompletedProcess[str]:
    done = run_drpo(*args)
    if check_code is not None:
        assert done.returncode == check_code, done.stderr
    return done


def start(stub: StubProcess, tmp: Path, policy: str = "every", depth: int = 2) -> str:
    done = drpo(
        *optimize_args(
            stub.base_url,
            tmp,
            "--review",
            policy,
            actions=3,
            depth=depth,
            examples=None,
            validation=1,
        )
    )
    assert done.returncode == 3, done.stderr  # paused: waiting for a decision
    assert "waiting for a review decision" in done.stderr
    (row,) = RunStore(tmp / "runs.db").runs()
    assert row["status"] == "waiting"
    return str(row["id"])


def waiting_on(tmp: Path, run_id: str) -> str:
    request = asyncio.run(pending_request(run_id, tmp / "runs.db"))
    assert request is not None
    return request.candidate_id


def test_runs_lists_a_waiting_run_and_approval_repeats_no_call(
    stub: StubProcess, tmp_path: Path
) -> None:
    run_id = start(stub, tmp_path)
    listing = drpo("runs", "--store", str(tmp_path / "runs.db"), check_code=0)
    assert "waiting" in listing.stdout
    before = count_records(tmp_path / "calls.jsonl")
    candidate = waiting_on(tmp_path, run_id)
    # Approve everything asked, one process per decision, until the run ends.
    decisions = 0
    while True:
        done = drpo(
            "approve", run_id, "--candidate", candidate, "--store", str(tmp_path / "runs.db")
        )
        decisions += 1
        if done.returncode == 0:
            break
        assert done.returncode == 3, done.stderr
        candidate = waiting_on(tmp_path, run_id)
    store = RunStore(tmp_path / "runs.db")
    assert store.run(run_id)["status"] == "completed"  # type: ignore[index]
    # Levels 1 and 2 each ask about the 2 surviving edits.
    assert decisions == 4
    calls = store.calls(run_id)
    paid = [c["cache_key"] for c in calls if c["outcome"] == "ok"]
    assert len(paid) == len(set(paid)), "an approval re-issued a model call"
    # Every request the stub saw was paid for once: nothing ran twice across the 5 processes.
    assert count_records(tmp_path / "calls.jsonl") == len(paid) >= before
    assert [d["decision"] for d in store.db["decisions"].rows] == ["approve"] * 4


def test_rejected_edit_never_reaches_the_beam_or_the_result(
    stub: StubProcess, tmp_path: Path
) -> None:
    run_id = start(stub, tmp_path, depth=1)
    first = waiting_on(tmp_path, run_id)
    store = RunStore(tmp_path / "runs.db")
    rejected_prompt = store.candidate(run_id, first)["prompt"]
    assert rejected_prompt == f"{ROOT} | a1"  # the best child is asked about first
    done = drpo(
        "reject",
        run_id,
        "--candidate",
        first,
        "--comment",
        "too long",
        "--store",
        str(tmp_path / "runs.db"),
    )
    while done.returncode == 3:
        done = drpo(
            "approve",
            run_id,
            "--candidate",
            waiting_on(tmp_path, run_id),
            "--store",
            str(tmp_path / "runs.db"),
        )
    assert done.returncode == 0, done.stderr
    row = RunStore(tmp_path / "runs.db").run(run_id)
    assert row is not None and row["final_prompt"] != rejected_prompt
    cand = RunStore(tmp_path / "runs.db").candidate(run_id, first)
    assert cand["survived"] == 0
    decision = next(iter(RunStore(tmp_path / "runs.db").db["decisions"].rows))
    assert (decision["decision"], decision["comment"]) == ("reject", "too long")


def test_an_edit_is_scored_and_can_win(stub: StubProcess, tmp_path: Path) -> None:
    run_id = start(stub, tmp_path, depth=1)
    first = waiting_on(tmp_path, run_id)
    person = tmp_path / "mine.txt"
    person.write_text("You are a careful assistant. | a1 | a1", encoding="utf-8")
    done = drpo(
        "edit",
        run_id,
        "--candidate",
        first,
        "--file",
        str(person),
        "--store",
        str(tmp_path / "runs.db"),
    )
    while done.returncode == 3:
        done = drpo(
            "approve",
            run_id,
            "--candidate",
            waiting_on(tmp_path, run_id),
            "--store",
            str(tmp_path / "runs.db"),
        )
    assert done.returncode == 0, done.stderr
    store = RunStore(tmp_path / "runs.db")
    edited = store.candidate(run_id, f"{first}-edit")
    assert edited["prompt"] == person.read_text().strip()
    assert edited["level_reward"] == 4.0  # scored like any candidate (ends in a1)
    assert store.candidate(run_id, first)["survived"] == 0


def test_stop_ends_the_run_cleanly_with_the_best_so_far(stub: StubProcess, tmp_path: Path) -> None:
    run_id = start(stub, tmp_path, depth=3)
    done = drpo(
        "stop",
        run_id,
        "--candidate",
        waiting_on(tmp_path, run_id),
        "--store",
        str(tmp_path / "runs.db"),
    )
    assert done.returncode == 0, done.stderr
    row = RunStore(tmp_path / "runs.db").run(run_id)
    assert row is not None and row["status"] == "stopped"
    levels = {r["level"] for r in RunStore(tmp_path / "runs.db").db["candidates"].rows}
    assert max(levels) == 1  # stopped at level 1 of 3


def test_final_policy_asks_once_about_the_final_prompt(stub: StubProcess, tmp_path: Path) -> None:
    run_id = start(stub, tmp_path, policy="final", depth=1)
    request = asyncio.run(pending_request(run_id, tmp_path / "runs.db"))
    assert request is not None and request.kind == "final"
    drpo(
        "approve",
        run_id,
        "--candidate",
        request.candidate_id,
        "--store",
        str(tmp_path / "runs.db"),
        check_code=0,
    )
    row = RunStore(tmp_path / "runs.db").run(run_id)
    assert row is not None and row["final_prompt"] == request.prompt


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "{run}", "--candidate", "L9-nope"], "is not awaiting review"),
        (
            ["edit", "{run}", "--candidate", "{cand}", "--file", "/nonexistent/p.txt"],
            "prompt file not found",
        ),
        (["approve", "no-such-run", "--candidate", "x"], "no run 'no-such-run'"),
    ],
)
def test_malformed_decisions_change_nothing(
    stub: StubProcess, tmp_path: Path, args: list[str], message: str
) -> None:
    run_id = start(stub, tmp_path, depth=1)
    candidate = waiting_on(tmp_path, run_id)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*.db")}
    done = drpo(
        *[a.format(run=run_id, cand=candidate) for a in args], "--store", str(tmp_path / "runs.db")
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*.db")
    } == digest


def test_decision_for_a_run_that_is_not_waiting(stub: StubProcess, tmp_path: Path) -> None:
    done = drpo(*optimize_args(stub.base_url, tmp_path, depth=1, examples=None))
    assert done.returncode == 0, done.stderr
    (row,) = RunStore(tmp_path / "runs.db").runs()
    refused = drpo("approve", row["id"], "--candidate", "x", "--store", str(tmp_path / "runs.db"))
    assert refused.returncode == 2 and "not waiting" in refused.stderr
