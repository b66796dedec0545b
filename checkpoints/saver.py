"""Open LangGraph's stock SQLite checkpointer for a run database.

The graph is async, so the async saver is used (the sync one fails under `ainvoke`). Only drpo's
own state types may be deserialised from a checkpoint: the allow-list closes the door on
arbitrary classes named in a tampered file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from drpo.checkpoints.store import StoreError, create_private_file
from drpo.state.graph_state import ExampleOutcome, Reset
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
    return JsonPlusSerializer(allowed_msgpack_modules=list(STATE_TYPES))


@asynccontextmanager
async def open_checkpointer(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
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
