"""Claiming a run: one live owner at a time; a dead, unreaped or recycled owner is replaced."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drpo.checkpoints.ownership import Owner, live_owner
from drpo.checkpoints.store import RunInUse, RunStore
from drpo.cli.app import shown_status


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", {"preset": "quick"}, ["q1"])
    yield store
    store.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def hold(store: RunStore, owner: Owner, run_id: str = "r1") -> None:
    """Write a claim as another process would have."""
    store.update_run(
        run_id, pid=owner.pid, host=owner.host, pid_started=owner.started, claimed_at=1.0
    )


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_names_this_process(store: RunStore) -> None:
    before = store.claim_run("r1")
    assert before is not None and before["pid"] is None
    row = store.run("r1")
    assert row is not None
    assert Owner.of(row) == Owner.current()
    assert row["claimed_at"] > 0
    assert store.claim_run("r1") is not None  # the owner may claim again


def test_a_live_owner_keeps_the_run_and_nothing_is_written(
    store: RunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    hold(store, Owner.process(sleeper.pid))
    before = store.run("r1")
    with pytest.raises(RunInUse, match=rf"in use by process {sleeper.pid} on "):
        store.claim_run("r1")
    assert store.run("r1") == before


def test_a_dead_owner_is_taken_over(store: RunStore) -> None:
    hold(store, Owner(dead_pid(), Owner.current().host, None))
    store.claim_run("r1")
    row = store.run("r1")
    assert row is not None and row["pid"] == os.getpid()


def test_a_killed_owner_not_yet_reaped_is_taken_over(
    store: RunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    owner = Owner.process(sleeper.pid)
    sleeper.kill()
    deadline = time.monotonic() + 10
    while Owner.process(sleeper.pid).alive():  # wait for the kill to land; it stays a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(sleeper.pid, 0)  # the pid still answers signals
    hold(store, owner)
    store.claim_run("r1")
    row = store.run("r1")
    assert row is not None and row["pid"] == os.getpid()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_recycled_pid_is_not_the_owner(store: RunStore, sleeper: subprocess.Popen[bytes]) -> None:
    alive = Owner.process(sleeper.pid)
    assert alive.started is not None
    hold(store, Owner(alive.pid, alive.host, alive.started - 1))  # an earlier process, same pid
    store.claim_run("r1")
    row = store.run("r1")
    assert row is not None and row["pid"] == os.getpid()


def test_an_owner_on_another_host_is_assumed_alive(store: RunStore) -> None:
    hold(store, Owner(dead_pid(), "some-other-host", None))
    with pytest.raises(RunInUse, match="on some-other-host"):
        store.claim_run("r1")


def test_release_gives_up_only_this_processs_claim(
    store: RunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    store.claim_run("r1")
    store.release_run("r1")
    row = store.run("r1")
    assert row is not None and row["pid"] is None and row["host"] is None
    hold(store, Owner.process(sleeper.pid))
    store.release_run("r1")
    row = store.run("r1")
    assert row is not None and row["pid"] == sleeper.pid


def test_completed_and_missing_runs_are_not_claimed(store: RunStore) -> None:
    store.update_run("r1", status="completed")
    row = store.claim_run("r1")
    assert row is not None and row["status"] == "completed"
    stored = store.run("r1")
    assert stored is not None and stored["pid"] is None
    assert store.claim_run("no-such-run") is None


def test_runs_lists_a_running_run_without_a_live_owner_as_interrupted(
    store: RunStore, sleeper: subprocess.Popen[bytes]
) -> None:
    hold(store, Owner.process(sleeper.pid))
    row = store.run("r1")
    assert row is not None and live_owner(row) is not None
    assert shown_status(row) == "running"
    hold(store, Owner(dead_pid(), Owner.current().host, None))
    row = store.run("r1")
    assert row is not None and shown_status(row) == "interrupted"
    store.update_run("r1", status="paused")
    row = store.run("r1")
    assert row is not None and shown_status(row) == "paused"


def test_a_store_made_before_claims_gets_the_claim_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = RunStore(path)
    old.create_run("old", {}, [])
    old.close()
    connection = sqlite3.connect(path)
    for column in ("host", "pid_started", "claimed_at"):
        connection.execute(f"alter table runs drop column {column}")
    connection.execute("update runs set pid = ?", [dead_pid()])
    connection.commit()
    connection.close()
    store = RunStore(path)
    assert {"host", "pid_started", "claimed_at"} <= set(store.db.table("runs").columns_dict)
    store.claim_run("old")
    row = store.run("old")
    store.close()
    assert row is not None and row["pid"] == os.getpid()
