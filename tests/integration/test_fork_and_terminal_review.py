"""Forking a run from a past step, and reviewing in a real terminal."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from cli_runner import run_drpo
from stub_runs import SCRIPT, optimize_args
from stub_server import StubProcess

from drpo.checkpoints.store import RunStore
from drpo.graph.review import steps

pytestmark = pytest.mark.integration


def small_run(url: str, tmp: Path, *extra: str) -> list[str]:
    return optimize_args(url, tmp, *extra, examples=None, validation=1)


def run_fingerprint(tmp: Path, run_id: str) -> str:
    """A digest of every row that belongs to the run, in the run store and its thread."""
    digest = hashlib.sha256()
    store = sqlite3.connect(tmp / "runs.db")
    for table, column in [
        ("runs", "id"),
        ("candidates", "run_id"),
        ("answers", "run_id"),
        ("judgements", "run_id"),
        ("llm_calls", "run_id"),
        ("decisions", "run_id"),
        ("examples", "run_id"),
    ]:
        rows = store.execute(f"select * from {table} where {column} = ? order by 1, 2", [run_id])
        digest.update(json.dumps(rows.fetchall(), default=repr).encode())
    checkpoints = sqlite3.connect(tmp / "ck.db")
    for table in ("checkpoints", "writes"):
        rows = checkpoints.execute(
            f"select * from {table} where thread_id = ? order by 1, 2, 3, 4", [run_id]
        )
        digest.update(json.dumps(rows.fetchall(), default=repr).encode())
    return digest.hexdigest()


def test_fork_with_a_person_prompt_leaves_the_parent_byte_identical(tmp_path: Path) -> None:
    with StubProcess(SCRIPT) as stub:
        done = run_drpo(*small_run(stub.base_url, tmp_path))
        assert done.returncode == 0, done.stderr
        (row,) = RunStore(tmp_path / "runs.db").runs()
        parent = row["id"]
        before = run_fingerprint(tmp_path, parent)
        history = run_drpo("history", parent, "--store", str(tmp_path / "runs.db"))
        assert history.returncode == 0 and "L1-" in history.stdout
        boundary = next(
            s
            for s in asyncio.run(steps(parent, tmp_path / "runs.db"))
            if s.next == ("start_level",) and s.level == 1
        )
        mine = tmp_path / "mine.txt"
        mine.write_text("You are a meticulous assistant. | a1", encoding="utf-8")
        forked = run_drpo(
            "fork",
            parent,
            "--at",
            str(boundary.step),
            "--prompt-file",
            str(mine),
            "--store",
            str(tmp_path / "runs.db"),
        )
        assert forked.returncode == 0, forked.stderr
    assert run_fingerprint(tmp_path, parent) == before
    store = RunStore(tmp_path / "runs.db")
    child = next(r for r in store.runs() if r["id"] != parent)
    assert child["parent_run"] == parent and child["status"] == "completed"
    # The person's prompt was expanded at level 2 of the fork: its children carry its text.
    kids = list(store.db["candidates"].rows_where("run_id = ? and level = 2", [child["id"]]))
    assert kids and all(k["prompt"].startswith("You are a meticulous assistant.") for k in kids)


def test_fork_inside_a_fan_out_resumes_in_the_child_and_leaves_the_parent_untouched(
    tmp_path: Path,
) -> None:
    with StubProcess(SCRIPT) as stub:
        done = run_drpo(*small_run(stub.base_url, tmp_path))
        assert done.returncode == 0, done.stderr
        (row,) = RunStore(tmp_path / "runs.db").runs()
        parent = row["id"]
        before = run_fingerprint(tmp_path, parent)
        # A step inside a superstep of parallel branches: what the public update API cannot copy.
        inner = next(
            s for s in asyncio.run(steps(parent, tmp_path / "runs.db")) if s.next.count("score") > 1
        )
        forked = run_drpo(
            "fork", parent, "--at", str(inner.step), "--store", str(tmp_path / "runs.db")
        )
        assert forked.returncode == 0, forked.stderr
    assert run_fingerprint(tmp_path, parent) == before
    store = RunStore(tmp_path / "runs.db")
    child = next(r for r in store.runs() if r["id"] != parent)
    assert child["parent_run"] == parent and child["status"] == "completed"
    assert child["final_prompt"]


def test_fork_refuses_a_prompt_off_a_level_boundary(tmp_path: Path) -> None:
    with StubProcess(SCRIPT) as stub:
        done = run_drpo(*small_run(stub.base_url, tmp_path))
        assert done.returncode == 0, done.stderr
    (row,) = RunStore(tmp_path / "runs.db").runs()
    inner = next(
        s
        for s in asyncio.run(steps(row["id"], tmp_path / "runs.db"))
        if s.next and s.next[0] == "score"
    )
    mine = tmp_path / "mine.txt"
    mine.write_text("x prompt", encoding="utf-8")
    refused = run_drpo(
        "fork",
        row["id"],
        "--at",
        str(inner.step),
        "--prompt-file",
        str(mine),
        "--store",
        str(tmp_path / "runs.db"),
    )
    assert refused.returncode == 2 and "level boundary" in refused.stderr


def test_interactive_review_in_a_real_terminal(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    with StubProcess(SCRIPT) as stub:
        done = run_drpo(*small_run(stub.base_url, tmp_path, "--review", "every"))
        assert done.returncode == 3, done.stderr
        (row,) = RunStore(tmp_path / "runs.db").runs()
        terminal = pexpect.spawn(
            sys.executable,
            ["-m", "drpo.cli.app", "review", row["id"], "--store", str(tmp_path / "runs.db")],
            env={"COLUMNS": "120", "TERM": "xterm", "PATH": "/usr/bin:/bin"},
            encoding="utf-8",
            timeout=60,
            dimensions=(50, 120),
        )
        screen = io.StringIO()
        terminal.logfile_read = screen
        # First question: reject it with a comment; then approve everything that follows.
        terminal.expect("proposed prompt")
        terminal.expect("decide later")
        terminal.sendline("r")
        terminal.expect("comment")
        terminal.sendline("off topic")
        for _ in range(8):
            index = terminal.expect(["decide later", "Final alignment prompt", pexpect.EOF])
            if index != 0:
                break
            terminal.sendline("a")
            terminal.expect("comment")
            terminal.sendline("")
        terminal.expect(pexpect.EOF)
        terminal.close()
        assert terminal.exitstatus == 0, screen.getvalue()[-2000:]
    store = RunStore(tmp_path / "runs.db")
    decisions = [(d["decision"], d["comment"]) for d in store.db["decisions"].rows]
    assert decisions[0] == ("reject", "off topic")
    assert all(d == "approve" for d, _ in decisions[1:]) and len(decisions) >= 2
    assert store.run(row["id"])["status"] == "completed"  # type: ignore[index]
