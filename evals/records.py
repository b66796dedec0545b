"""The evaluation tables, kept in the run store database next to the runs they evaluate.

The run store's module owns the optimization tables; evaluations add four of their own here,
created with sqlite-utils on the same database file (`RunStore(path).db`):

- eval_runs: one row per evaluation (settings, conditions and their prompts, queries, pairs,
  the dropped overlap, judge identity, status, timestamps)
- eval_answers: one row per condition × query (the base model's answer and its length)
- eval_scores: one row per answer × aspect (score, NULL when missing, rationale, error, judge
  model and template hash)
- eval_pairs: one row per pairwise judgement in one order (verdict, winner, both lengths)

The model calls of an evaluation are in `llm_calls` under the evaluation's id.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from drpo.checkpoints.store import RunStore, TableSchema, create_tables

EVAL_PREFIX = "eval-"


def new_eval_id() -> str:
    """A new evaluation id: a prefix, the start time and a random suffix."""
    return EVAL_PREFIX + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


_TABLES: dict[str, TableSchema] = {
    "eval_runs": TableSchema(
        {
            "id": str,
            "created_at": float,
            "finished_at": float,
            "status": str,
            "drpo_run": str,
            "settings": str,
            "conditions": str,
            "queries": str,
            "pairs": str,
            "overlap": str,
            "base_model": str,
            "judge_model": str,
            "judge_is_base": int,
            "absolute_template": str,
            "pairwise_template": str,
            "seed": int,
            # Which metrics ran: "judge" (absolute and pairwise) and/or "refusal" (no model).
            "metrics": str,
            # Why the absolute scores are integers only (no or unusable logprobs); NULL when
            # every score also has its probability-weighted value.
            "absolute_fallback": str,
            "error": str,
        },
        pk="id",
    ),
    "eval_answers": TableSchema(
        {
            "eval_id": str,
            "id": str,
            "condition": str,
            "query_id": str,
            "query": str,
            "harmful": int,
            "category": str,
            "answer": str,
            "error": str,
            "length_chars": int,
            "length_words": int,
            "base_model": str,
            "created_at": float,
        },
        pk=("eval_id", "id"),
        indexes=(("eval_id", "condition"),),
    ),
    "eval_scores": TableSchema(
        {
            "eval_id": str,
            "answer_id": str,
            "condition": str,
            "query_id": str,
            "aspect": str,
            "score": int,
            # The probability-weighted score (expected value over the 1-5 score tokens); NULL
            # when the judge's endpoint gave no usable logprobs.
            "expected": float,
            "rationale": str,
            "error": str,
            "length_words": int,
            "judge_model": str,
            "judge_endpoint": str,
            "template": str,
            "template_hash": str,
        },
        pk=("eval_id", "answer_id", "aspect"),
        indexes=(("eval_id", "condition"),),
    ),
    "eval_pairs": TableSchema(
        {
            "eval_id": str,
            "query_id": str,
            "x": str,
            "y": str,
            "shown_order": str,  # xy: x shown first (as A); yx: y first
            "first": str,
            "second": str,
            "verdict": str,
            # P(first answer preferred) + half P(tie), from the verdict token's logprobs;
            # NULL when the endpoint gave none.
            "first_probability": float,
            "winner": str,
            "rationale": str,
            "error": str,
            "length_first": int,
            "length_second": int,
            "judge_model": str,
            "judge_endpoint": str,
            "template": str,
            "template_hash": str,
        },
        pk=("eval_id", "query_id", "x", "y", "shown_order"),
    ),
}


# Columns added after the first release: stores written before gain them (NULL for old rows).
_ADDED_COLUMNS: tuple[tuple[str, str, type], ...] = (
    ("eval_pairs", "first_probability", float),
    ("eval_runs", "metrics", str),
    ("eval_scores", "expected", float),
    ("eval_runs", "absolute_fallback", str),
)


def ensure_eval_schema(store: RunStore) -> None:
    """Create the evaluation tables if they are missing (idempotent)."""
    with store.db.conn:
        create_tables(store.db, _TABLES)
        for table, column, kind in _ADDED_COLUMNS:
            if column not in store.db.table(table).columns_dict:
                store.db.table(table).add_column(column, kind)


class EvalRecorder:
    """Writes one evaluation's rows; every write is its own transaction (safe to interrupt)."""

    def __init__(self, store: RunStore, eval_id: str) -> None:
        self.store = store
        self.eval_id = eval_id
        self._lock = threading.Lock()
        ensure_eval_schema(store)

    def _upsert(self, table: str, row: dict[str, Any], pk: tuple[str, ...] | str) -> None:
        # All writes happen on the event loop's thread; the lock guards against a caller that
        # records from worker threads. SQLite's busy timeout handles other processes.
        with self._lock, self.store.db.conn:
            self.store.db.table(table).upsert(row, pk=pk)

    def start(self, **fields: Any) -> None:
        """Insert the evaluation's row in status `running` with its fields."""
        row = {"id": self.eval_id, "created_at": time.time(), "status": "running"}
        row.update({k: _json(v) for k, v in fields.items()})
        self._upsert("eval_runs", row, "id")

    def update(self, **fields: Any) -> None:
        """Set fields of the evaluation's row."""
        row = {"id": self.eval_id, **{k: _json(v) for k, v in fields.items()}}
        self._upsert("eval_runs", row, "id")

    def answer(self, row: dict[str, Any]) -> None:
        """Write one condition's answer to one query."""
        self._upsert(
            "eval_answers",
            {"eval_id": self.eval_id, "created_at": time.time(), **row},
            ("eval_id", "id"),
        )

    def scores(self, rows: list[dict[str, Any]]) -> None:
        """Write an answer's per-aspect scores in one transaction."""
        with self._lock, self.store.db.conn:
            self.store.db.table("eval_scores").upsert_all(
                [{"eval_id": self.eval_id, **row} for row in rows],
                pk=("eval_id", "answer_id", "aspect"),
            )

    def pair(self, row: dict[str, Any]) -> None:
        """Write one pairwise judgement in one shown order."""
        self._upsert(
            "eval_pairs",
            {"eval_id": self.eval_id, **row},
            ("eval_id", "query_id", "x", "y", "shown_order"),
        )


def _json(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def eval_row(store: RunStore, eval_id: str) -> dict[str, Any] | None:
    """The evaluation's row, or None when the store has no such evaluation."""
    if "eval_runs" not in store.db.table_names():
        return None
    rows = list(store.db.table("eval_runs").rows_where("id = ?", [eval_id]))
    return rows[0] if rows else None


def eval_rows(store: RunStore, table: str, eval_id: str) -> list[dict[str, Any]]:
    """An evaluation's rows of `table` in insertion order (none if the table does not exist)."""
    if table not in store.db.table_names():
        return []
    return list(store.db[table].rows_where("eval_id = ?", [eval_id], order_by="rowid"))
