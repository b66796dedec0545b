"""The Postgres checkpointer: a search checkpointed to a throwaway Postgres pauses and resumes.

A private server is started in a temporary directory on a free port (as `nobody` when the tests
run as root, which initdb refuses). The test is skipped when initdb is not on PATH or the
`postgres` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from run_results import comparable_result
from scripted_llm import ScriptedLLM
from stub_server import StubServer

from drpo.backends.errors import CredentialError
from drpo.checkpoints.store import RunStore, StoreError
from drpo.graph.api import RunPaused, optimize, resume
from drpo.state.settings import ConfigError, Settings

pytestmark = pytest.mark.integration

PASSWORD = "pg-secret-9f1c"
PASSWORD_ENV = "DRPO_TEST_PG_PASSWORD"
SCHEDULE: dict[str, Any] = {
    "search": {"width": 2, "actions": 2, "depth": 2, "batch_size": 1, "validation_size": 2},
    "examples": {"rounds": 1, "limit": 2},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres_user(folder: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    shutil.chown(folder, "nobody")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway Postgres server; yields its URL (the password is in PASSWORD_ENV)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no Postgres server binaries (initdb, pg_ctl) on PATH")
    if importlib.util.find_spec("langgraph.checkpoint.postgres") is None:
        pytest.skip("the postgres extra is not installed (pip install 'drpo[postgres]')")
    # Not under pytest's temporary root, which only its owner may enter.
    folder = Path(tempfile.mkdtemp(prefix="drpo-postgres-"))
    os.chmod(folder, 0o755)
    prefix = _as_postgres_user(folder)
    try:
        yield from _serve(folder, prefix, initdb, pg_ctl)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(folder: Path, prefix: list[str], initdb: str, pg_ctl: str) -> Iterator[str]:
    data = folder / "data"
    password_file = folder / "password"
    password_file.write_text(PASSWORD)
    if prefix:
        shutil.chown(password_file, "nobody")
    port = _free_port()
    run = lambda *args: subprocess.run(  # noqa: E731
        [*prefix, *args], check=True, capture_output=True, text=True, timeout=300
    )
    run(
        initdb,
        "-D",
        str(data),
        "-U",
        "drpo",
        f"--pwfile={password_file}",
        "--auth=scram-sha-256",
        "--no-sync",
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    try:
        yield f"postgresql://drpo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=120,
        )


@pytest.fixture
def pg_settings(
    postgres: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)

    def build(**overrides: Any) -> Settings:
        checkpoint = {"backend": "postgres", "url": postgres, "password_env": PASSWORD_ENV}
        return make_settings(**SCHEDULE, checkpoint=checkpoint, **overrides)

    return build


def checkpoint_rows(url: str, run_id: str) -> int:
    import psycopg

    with psycopg.connect(url, password=PASSWORD) as connection:
        row = connection.execute(
            "select count(*) from checkpoints where thread_id = %s", [run_id]
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_search_checkpointed_to_postgres_pauses_and_resumes(
    postgres: str,
    stub: StubServer,
    pg_settings: Callable[..., Settings],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    stub.set_responder(ScriptedLLM())
    reference_settings = make_settings(
        **SCHEDULE,
        store=str(tmp_path / "reference.db"),
        checkpoints=str(tmp_path / "reference-checkpoints.db"),
    )
    reference = optimize(reference_settings)
    expected = comparable_result(reference_settings.store, reference.run_id)
    stub.reset()

    settings = pg_settings(budget={"calls": 15})
    with pytest.raises(RunPaused) as paused:
        optimize(settings)
    run_id = paused.value.run_id
    assert checkpoint_rows(postgres, run_id) > 0
    result = resume(run_id, store_path=settings.store, budget={"calls": 10_000})
    assert result.status == "completed"
    assert comparable_result(settings.store, run_id) == expected
    store = RunStore(settings.store)
    keys = [c["cache_key"] for c in store.calls(run_id) if c["outcome"] == "ok"]
    stored_settings = (store.run(run_id) or {})["settings"]
    store.close()
    assert len(keys) == len(set(keys))  # nothing paid twice across the pause
    assert not Path(settings.checkpoints).exists()  # no SQLite checkpoints on the side
    assert PASSWORD not in stored_settings and PASSWORD_ENV in stored_settings


def test_a_missing_password_variable_or_a_wrong_password_is_one_line(
    pg_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pg_settings()
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(CredentialError, match=f"{PASSWORD_ENV} .checkpoint.password_env"):
        optimize(settings)
    assert not Path(settings.store).exists()
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(
        StoreError, match="cannot open Postgres checkpoints at postgresql://"
    ) as exc:
        optimize(settings)
    assert "\n" not in str(exc.value) and "wrong" not in str(exc.value)


def test_a_password_in_the_url_is_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="must not contain a password"):
        make_settings(
            checkpoint={"backend": "postgres", "url": "postgresql://u:secret@localhost/db"}
        )
