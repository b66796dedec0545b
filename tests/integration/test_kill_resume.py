"""SIGKILL a run at several points, resume it, and check nothing already paid for is paid again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stub_runs import DRPO, SCRIPT, optimize_args
from stub_server import StubProcess, count_records

from drpo.checkpoints.store import RunStore

pytestmark = pytest.mark.integration


def cli_args(url: str, tmp: Path) -> list[str]:
    return optimize_args(url, tmp, actions=3, batch_size=2, examples=3, concurrency=4)


def run_to_end(url: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DRPO, *cli_args(url, tmp)], capture_output=True, text=True, timeout=300)


def final_prompt(store_path: Path) -> str:
    store = RunStore(store_path)
    (row,) = store.runs()
    assert row["status"] == "completed", row
    return str(row["final_prompt"])


def test_reference_run_completes(tmp_path: Path) -> None:
    with StubProcess(SCRIPT, record=tmp_path / "calls.jsonl", latency=0.02) as stub:
        done = run_to_end(stub.base_url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| a1" in final_prompt(tmp_path / "runs.db")


def start_until(
    url: str, folder: Path, record: Path, role: str, calls: int
) -> subprocess.Popen[str]:
    """Start `drpo optimize` against the stub and return once it has made `calls` of `role`."""
    process = subprocess.Popen(
        [*DRPO, *cli_args(url, folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while count_records(record, role) < calls and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.02)
    return process


@pytest.mark.parametrize(
    ("role", "after"),
    [
        ("ExampleRewrite", 1),  # stage A, before stage B starts
        ("base", 5),  # in the middle of level 1
        ("PromptProposal", 3),  # level 2's expansion
        ("base", 22),  # validation of the finalists
    ],
)
def test_kill_and_resume_repeats_no_completed_call(tmp_path: Path, role: str, after: int) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    with StubProcess(SCRIPT, latency=0.0) as stub:
        assert run_to_end(stub.base_url, reference).returncode == 0
    expected = final_prompt(reference / "runs.db")

    record = tmp_path / "calls.jsonl"
    with StubProcess(SCRIPT, record=record, latency=0.15) as stub:
        process = start_until(stub.base_url, tmp_path, record, role, after)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        store = RunStore(tmp_path / "runs.db")
        (row,) = store.runs()
        run_id = row["id"]
        completed_before = {c["cache_key"] for c in store.calls(run_id) if c["outcome"] == "ok"}
        assert completed_before, "the kill came before any call completed"

        resumed = subprocess.run(
            [*DRPO, "resume", run_id, "--store", str(tmp_path / "runs.db")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr
    assert final_prompt(tmp_path / "runs.db") == expected
    calls = RunStore(tmp_path / "runs.db").calls(run_id)
    paid = [c["cache_key"] for c in calls if c["outcome"] == "ok"]
    # Each distinct call was paid for once: nothing completed before the kill was made again.
    assert len(paid) == len(set(paid))
    assert completed_before <= set(paid)


def test_sigterm_mid_run_is_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with StubProcess(SCRIPT, record=record, latency=0.15) as stub:
        process = start_until(stub.base_url, tmp_path, record, "base", 3)
        process.send_signal(signal.SIGTERM)  # what `timeout`, systemd or a container stop send
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 143, stderr
        # Only drpo's own line: no warning about the graph's tasks that the stop cancelled.
        assert stderr.rstrip().endswith(
            "terminated; the run is saved — resume it with drpo resume RUN"
        )
        assert "Warning" not in stderr and "Traceback" not in stderr, stderr
        (row,) = RunStore(tmp_path / "runs.db").runs()
        resumed = subprocess.run(
            [*DRPO, "resume", row["id"], "--store", str(tmp_path / "runs.db")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert resumed.returncode == 0, resumed.stderr
