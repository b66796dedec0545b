"""Two processes never drive one run: a second `drpo resume` is refused while the owner lives.

A run whose model calls hang (the stub holds every reply while a gate file exists) is driven by
a child process; `drpo resume` from another process is refused with one line naming the owner,
and the claim in the run store stays the owner's. Once the owner is SIGKILLed its claim is
stale: `drpo runs` shows the run as interrupted and `drpo resume` takes it over and finishes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from stub_runs import DRPO, optimize_args
from stub_server import StubProcess, count_records

from drpo.checkpoints.store import RunStore

pytestmark = pytest.mark.integration

TIMEOUT = 240
CLAIM = ("pid", "host", "pid_started", "claimed_at")

GATED_SCRIPT = """\
import time
from pathlib import Path

from scripted_llm import default

GATE = Path({gate!r})


def gated():
    respond = default()

    def hold_while_gated(request):
        while GATE.exists():
            time.sleep(0.02)
        return respond(request)

    return hold_while_gated
"""


def drpo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DRPO, *args], capture_output=True, text=True, timeout=TIMEOUT)


def stored_run(store_path: Path) -> dict[str, Any] | None:
    if not store_path.exists():
        return None
    store = RunStore(store_path)
    try:
        runs = store.runs()
    finally:
        store.close()
    return runs[0] if runs else None


def status_listed(store: Path, run_id: str) -> str:
    """The status `drpo runs` shows for the run."""
    listed = drpo("runs", "--store", str(store))
    (line,) = [line for line in listed.stdout.splitlines() if run_id in line]
    return line.split(run_id, 1)[1].strip(" │|").split()[0]


def test_a_second_resume_is_refused_until_the_owner_dies(tmp_path: Path) -> None:
    gate, record, store = tmp_path / "gate", tmp_path / "calls.jsonl", tmp_path / "runs.db"
    script = tmp_path / "gated_llm.py"
    script.write_text(GATED_SCRIPT.format(gate=str(gate)), encoding="utf-8")
    gate.touch()
    with StubProcess(f"{script}:gated()", record=record) as stub:
        owner = subprocess.Popen(
            [*DRPO, *optimize_args(stub.base_url, tmp_path, depth=1, examples=1)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while (row := stored_run(store)) is None or row["pid"] != owner.pid:
                assert owner.poll() is None, owner.stderr.read() if owner.stderr else ""
                assert time.monotonic() < deadline, "the run never claimed itself"
                time.sleep(0.05)
            claim = {k: row[k] for k in CLAIM}

            refused = drpo("resume", row["id"], "--store", str(store))
            lines = [line for line in refused.stderr.splitlines() if line.strip()]
            assert refused.returncode == 2, refused.stderr
            assert len(lines) == 1 and lines[0].startswith("error:"), refused.stderr
            assert f"in use by process {owner.pid}" in lines[0]
            after = stored_run(store)
            assert after is not None and {k: after[k] for k in CLAIM} == claim
            assert after["status"] == "running"
            assert owner.poll() is None, "the refused resume disturbed the owner"
            assert status_listed(store, row["id"]) == "running"
        finally:
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait()
        assert count_records(record) == 0, "a model call returned while the gate was closed"
        gate.unlink()

        assert status_listed(store, row["id"]) == "interrupted"
        resumed = drpo("resume", row["id"], "--store", str(store))
        assert resumed.returncode == 0, resumed.stderr
    final = stored_run(store)
    assert final is not None and final["status"] == "completed" and final["final_prompt"]
    assert final["pid"] is None, "the claim was not given up at the end"


CLAIMER = """\
import sys, time
from pathlib import Path

from drpo.checkpoints.store import RunInUse, RunStore

store = RunStore(Path(sys.argv[1]))
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
try:
    store.claim_run("r1")
except RunInUse:
    print("refused", flush=True)
else:
    print("won", flush=True)
    time.sleep(float(sys.argv[3]))  # hold the claim while the others try
"""


def test_of_processes_claiming_at_once_exactly_one_wins(tmp_path: Path) -> None:
    store_path, go = tmp_path / "runs.db", tmp_path / "go"
    store = RunStore(store_path)
    store.create_run("r1", {}, [])
    store.close()
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(store_path), str(go), "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for claimer in claimers:
        assert claimer.stdout is not None and claimer.stdout.readline().strip() == "ready"
    go.touch()
    outcomes = [claimer.communicate(timeout=60) for claimer in claimers]
    assert all(c.returncode == 0 for c in claimers), [err for _, err in outcomes]
    assert sorted(out.strip() for out, _ in outcomes) == ["refused", "refused", "won"]
