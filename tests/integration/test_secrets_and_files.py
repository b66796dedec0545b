"""Secrets and files: the API key is never written, databases are private, stores are shared.

A whole search, review, report and export never write the API key anywhere; the databases are
readable by their owner only; two processes can share one run store.

The fake key sits in the environment variable named by `--api-key-env`; the stub checks that
every request really carried it, so the grep below would have something to find if drpo wrote
it down. While the search runs, the folder is polled so that SQLite's transient -wal and -shm
files are read (and their modes checked) before they are folded into the database.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_runner import run_drpo
from run_results import comparable_result
from scripted_llm import ScriptedLLM
from stub_runs import DRPO, optimize_args
from stub_server import Reply, StubRequest, StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.review import pending_request

pytestmark = pytest.mark.integration

SECRET = "sk-drpo-FAKE-2b9e61d04c7a4f3e8d15"
KEY_ENV = "DRPO_FAKE_SECRET_KEY"
NEEDLES = (SECRET.encode(), base64.b64encode(SECRET.encode()), SECRET.encode("utf-16-le"))
EXIT_PAUSED = 3


class KeyCheckingLLM(ScriptedLLM):
    """The scripted model, counting requests that did not carry the fake key."""

    def __init__(self) -> None:
        super().__init__()
        self.keyless = 0

    def __call__(self, request: StubRequest) -> Reply:
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            self.keyless += 1
        return super().__call__(request)


def search_args(url: str, folder: Path) -> list[str]:
    return optimize_args(
        url, folder, "--api-key-env", KEY_ENV, depth=1, examples=1, checkpoints="checkpoints.db"
    )


class FolderWatcher:
    """Polls a folder while drpo runs: greps every file it sees, records every file's mode."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits: list[str] = []
        self.modes: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> FolderWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for path in self.folder.rglob("*"):
                try:
                    if not path.is_file():
                        continue
                    mode = stat.S_IMODE(path.stat().st_mode)
                    data = path.read_bytes()
                except OSError:  # removed between listing and reading
                    continue
                self.modes.setdefault(path.name, set()).add(mode)
                if any(needle in data for needle in NEEDLES):
                    self.hits.append(str(path))
            time.sleep(0.02)


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    """The environment of every drpo command: the fake key, and a private HOME to grep too."""
    home = tmp_path / "home"
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRPO_")}
    return {**environ, KEY_ENV: SECRET, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


def drpo(
    args: list[str], env: dict[str, str], cwd: Path, outputs: list[str]
) -> subprocess.CompletedProcess[str]:
    done = run_drpo(*args, env=env, cwd=cwd)
    outputs += [done.stdout, done.stderr]
    return done


def test_search_review_and_export_never_write_the_key(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    runs = tmp_path / "runs"
    outputs: list[str] = []
    model = KeyCheckingLLM()
    with StubServer(model, latency=0.01) as stub, FolderWatcher(tmp_path) as watcher:
        args = [*search_args(stub.base_url, runs), "--review", "every"]
        waiting = drpo(args, key_env, tmp_path, outputs)
        assert waiting.returncode == EXIT_PAUSED, waiting.stderr
        store = RunStore(runs / "runs.db")
        (run,) = store.runs()
        store.close()
        run_id = run["id"]
        decisions = 0
        while True:
            request = asyncio.run(pending_request(run_id, runs / "runs.db"))
            if request is None:
                break
            decided = drpo(
                [
                    "approve",
                    run_id,
                    "--candidate",
                    request.candidate_id,
                    "--comment",
                    "looks fine",
                    "--store",
                    str(runs / "runs.db"),
                ],
                key_env,
                tmp_path,
                outputs,
            )
            decisions += 1
            assert decided.returncode in (0, EXIT_PAUSED), decided.stderr
            assert decisions < 30
        assert decided.returncode == 0, decided.stderr
        store_args = ["--store", str(runs / "runs.db")]
        for command in (["runs"], ["show", run_id], ["history", run_id]):
            assert drpo([*command, *store_args], key_env, tmp_path, outputs).returncode == 0
        if importlib.util.find_spec("drpo.cli.evaluation") is not None:
            # `drpo report` (HTML and Markdown); its module also runs on its own.
            report_args = ["report", run_id, *store_args, "-o", str(tmp_path / "report")]
            report = subprocess.run(
                [sys.executable, "-m", "drpo.cli.evaluation", *report_args],
                capture_output=True,
                text=True,
                env=key_env,
                cwd=tmp_path,
                timeout=300,
            )
            outputs += [report.stdout, report.stderr]
            assert report.returncode == 0, report.stderr
            assert list((tmp_path / "report").glob("*.html"))
        for fmt in ("json", "md", "txt"):
            exported = ["export", run_id, "--format", fmt, "-o", str(tmp_path / f"prompt.{fmt}")]
            assert drpo([*exported, *store_args], key_env, tmp_path, outputs).returncode == 0
            to_stdout = ["export", run_id, "--format", fmt, *store_args]
            assert drpo(to_stdout, key_env, tmp_path, outputs).returncode == 0
    assert model.keyless == 0 and stub.count() > 0, "every request carried the key"
    assert decisions >= 2
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"runs.db", "checkpoints.db", "prompt.json", "prompt.md", "prompt.txt"} <= {
        p.name for p in written
    }
    for path in written:
        data = path.read_bytes()
        assert not any(needle in data for needle in NEEDLES), path
    assert not watcher.hits, watcher.hits
    assert not any(SECRET in text for text in outputs)
    assert {"runs.db-wal", "checkpoints.db-wal"} <= set(watcher.modes), "WAL files were seen"
    for name, modes in watcher.modes.items():
        if name.startswith(("runs.db", "checkpoints.db")):
            assert modes == {0o600}, (name, sorted(map(oct, modes)))


def test_two_processes_share_one_run_store(tmp_path: Path, key_env: dict[str, str]) -> None:
    with StubServer(ScriptedLLM(), latency=0.02) as stub:
        reference = tmp_path / "reference"
        single = run_drpo(*search_args(stub.base_url, reference), env=key_env)
        assert single.returncode == 0, single.stderr
        shared = tmp_path / "shared"
        processes = [
            subprocess.Popen(
                [*DRPO, *search_args(stub.base_url, shared), "--no-cache"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=key_env,
            )
            for _ in range(2)
        ]
        results = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
    expected = comparable_result(reference / "runs.db")
    store = RunStore(shared / "runs.db")
    run_ids = [row["id"] for row in store.runs()]
    store.close()
    assert len(run_ids) == 2
    for run_id in run_ids:
        assert comparable_result(shared / "runs.db", run_id) == expected
    for name in ("runs.db", "checkpoints.db"):
        connection = sqlite3.connect(shared / name)
        assert connection.execute("pragma integrity_check").fetchone()[0] == "ok"
        connection.close()
