"""The run store's SQLite connection: opening it safely and writing in one transaction.

The run store's table modules (runs, calls, evaluations) all write through this one connection,
so a write that spans tables (a reply and the record of its call) stays one transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlite_utils


class StoreError(RuntimeError):
    """The run store cannot be opened or written; one line for the user."""


class _StoreLocked(Exception):
    """Opening the store met a lock SQLite would not wait for; the open is tried again."""


class RunInUse(StoreError):
    """Another live process drives the run; the message names it."""


def create_private_file(path: Path) -> None:
    """Create `path` readable by its owner only, before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class StoreDatabase:
    """One thread-safe sqlite-utils connection to a run store file, in WAL mode."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            create_private_file(self.path)
            connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None
        self.db = sqlite_utils.Database(connection)
        self._lock = threading.RLock()
        # Two processes opening a new store at once (two runs started together) have seen
        # "database is locked" here at once, without the busy timeout's wait: SQLite answers
        # some lock upgrades that way rather than risk a deadlock. The open is retried instead.
        deadline = time.monotonic() + 30
        while True:
            try:
                self._open(connection)
                break
            except _StoreLocked:
                if time.monotonic() > deadline:
                    connection.close()
                    raise StoreError(
                        f"cannot open run store {self.path}: database is locked"
                    ) from None
                time.sleep(0.1)

    def _open(self, connection: sqlite3.Connection) -> None:
        self._refuse_foreign_database()  # before WAL mode, which rewrites the file header
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL survives any process crash (kill -9 included); only a power
            # loss can drop the last commits, and it saves an fsync per write.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise _StoreLocked from None
            connection.close()
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None

    def _refuse_foreign_database(self) -> None:
        """Never add drpo's tables to another program's database named by mistake."""
        try:
            tables = set(self.db.table_names())
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise _StoreLocked from None
            self.db.conn.close()
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self.db.conn.close()
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None
        if tables and "runs" not in tables:
            self.db.conn.close()
            shown = ", ".join(sorted(tables)[:5])
            raise StoreError(
                f"{self.path} is not a drpo run store (it holds other tables: {shown})"
            )

    @contextmanager
    def _write(self) -> Iterator[None]:
        """Run the block as one transaction that holds the write lock from its start.

        sqlite-utils commits each operation on its own unless a transaction is open, so several
        writes (a reply and the record of its call) would otherwise not be atomic. BEGIN
        IMMEDIATE takes the write lock up front (waiting up to busy_timeout): a deferred
        transaction that reads table metadata before writing can fail at once with SQLITE_BUSY
        when another process wrote in between.
        """
        with self._lock:
            conn = self.db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._rollback()
                    raise
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise StoreError(f"cannot write run store {self.path}: {exc}") from None

    def _rollback(self) -> None:
        # A failed COMMIT or a full disk may already have ended the transaction.
        with suppress(sqlite3.Error):
            if self.db.conn.in_transaction:
                self.db.conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection; the store object is unusable afterwards."""
        self.db.conn.close()
