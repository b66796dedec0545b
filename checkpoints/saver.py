"""Open LangGraph's stock checkpointer for a run: SQLite by default, Postgres when configured.

The graph is async, so the async saver is used (the sync one fails under `ainvoke`). Only drpo's
own state types may be deserialised from a checkpoint: the allow-list closes the door on
arbitrary classes named in a tampered file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from drpo.backends.errors import CredentialError
from drpo.checkpoints.store import StoreError, create_private_file
from drpo.state.graph_state import ExampleOutcome, Reset
from drpo.state.settings import CheckpointSettings, Settings
from drpo.state.types import (
    Aspect,
    AspectScore,
    AspectSelection,
    Candidate,
    Example,
    Feedback,
    Judgement,
    LevelScore,
    Proposal,
    Query,
    ReviewDecision,
    ReviewRequest,
    ReviewScore,
    RunResult,
)

STATE_TYPES = (
    Aspect,
    AspectScore,
    AspectSelection,
    Candidate,
    Example,
    Feedback,
    Judgement,
    LevelScore,
    Proposal,
    Query,
    RunResult,
    Reset,
    ExampleOutcome,
    ReviewDecision,
    ReviewRequest,
    ReviewScore,
)


def serializer() -> JsonPlusSerializer:
    """LangGraph's serializer with drpo's state types allow-listed."""
    return JsonPlusSerializer(allowed_msgpack_modules=list(STATE_TYPES))


@asynccontextmanager
async def open_run_checkpointer(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The checkpointer the settings name: the SQLite file, or Postgres."""
    if settings.checkpoint.backend == "postgres":
        async with open_postgres_checkpointer(settings.checkpoint, environ) as saver:
            yield saver
    else:
        async with open_checkpointer(settings.checkpoints) as sqlite_saver:
            yield sqlite_saver


def postgres_password(checkpoint: CheckpointSettings, environ: Mapping[str, str]) -> str | None:
    """The Postgres password from the variable the settings name, or None when none is named."""
    name = checkpoint.password_env
    if name is None:
        return None
    value = environ.get(name)
    if not value:
        raise CredentialError(f"environment variable {name} (checkpoint.password_env) is not set")
    return value


@asynccontextmanager
async def open_postgres_checkpointer(
    checkpoint: CheckpointSettings, environ: Mapping[str, str] | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's Postgres saver on one connection; the password comes from the environment."""
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection, Error
        from psycopg.rows import dict_row
    except ImportError:
        raise StoreError(
            "checkpoint.backend 'postgres' needs the postgres extra: pip install 'drpo[postgres]'"
        ) from None
    password = postgres_password(checkpoint, os.environ if environ is None else environ)
    url = str(checkpoint.url)
    try:
        # autocommit and no prepared statements: what the saver's documentation requires.
        # psycopg leaves a connection parameter given as None out of the connection string.
        connection = await AsyncConnection.connect(
            url, autocommit=True, prepare_threshold=0, row_factory=dict_row, password=password
        )
    except Error as exc:
        reason = " ".join(str(exc).split())[:300]
        raise StoreError(f"cannot open Postgres checkpoints at {url}: {reason}") from None
    async with connection:
        # unused-ignore: without the postgres extra installed the saver's type is Any.
        saver = AsyncPostgresSaver(connection, serde=serializer())  # type: ignore[arg-type, unused-ignore]
        try:
            await saver.setup()
        except Error as exc:
            reason = " ".join(str(exc).split())[:300]
            raise StoreError(f"cannot set up Postgres checkpoints at {url}: {reason}") from None
        yield saver


@asynccontextmanager
async def open_checkpointer(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    """Open (creating it private) the SQLite checkpoint database at `path`."""
    try:
        create_private_file(Path(path))
    except OSError as exc:
        raise StoreError(f"cannot create checkpoint database {path}: {exc}") from None
    async with AsyncExitStack() as stack:
        try:
            connection = await stack.enter_async_context(aiosqlite.connect(str(path), timeout=30))
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")  # see RunStore: crash-safe in WAL
            saver = AsyncSqliteSaver(connection, serde=serializer())
            await saver.setup()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open checkpoint database {path}: {exc}") from None
        yield saver
