"""A run store written by an older drpo opens and gains every column this version writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from drpo.checkpoints.store import _TABLES, RunStore

OLD_SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "run-store-1d01326.sql"


def test_a_store_from_an_older_version_gains_every_column(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA.read_text())
    store = RunStore(path)
    for name, table in _TABLES.items():
        have = set(store.db.table(name).columns_dict)
        missing = set(table.columns) - have
        # A column declared here but missing from an older store breaks the first write to it
        # ("no such column"): each one must also be in the store's list of added columns.
        assert not missing, f"{name} lacks {sorted(missing)} after opening an older store"
