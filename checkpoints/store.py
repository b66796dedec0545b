"""The run store: a SQLite database, written with sqlite-utils, of everything a run did.

Graph state holds only the beam and small counters; the history lives here so that checkpoints
stay small and people can query runs with the `sqlite-utils` CLI or Datasette. Tables:

- runs: one row per run (settings without secrets, status, timestamps, best prompt, cost)
- candidates: every prompt proposed (parent, depth, level reward, path value, survived)
- answers: every base-model answer (candidate, query, stage)
- judgements: one row per answer and aspect (score, or NULL when missing, and rationale)
- selections: the selector's aspects per query (also the selector cache)
- examples: stage A's optimized in-context examples per run
- llm_calls: one row per model call (role, model, tokens, latency, outcome; never a key)
- reply_cache: stored replies, keyed by everything that determines them
- decisions: human review decisions (approve / reject / edit / stop)

This module holds the schema and its upgrade for older stores; the reads and writes are split by
concern: runs and candidates (drpo.checkpoints.runs), model calls and the reply cache
(drpo.checkpoints.calls), the evaluation of candidates (drpo.checkpoints.evaluations), over one
connection (drpo.checkpoints.database). `RunStore.for_run` binds a run id once (a `RunLedger`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import NamedTuple

import sqlite_utils

from drpo.checkpoints.calls import CallTables
from drpo.checkpoints.database import RunInUse, StoreError, create_private_file
from drpo.checkpoints.evaluations import METRIC_ASPECT, EvaluationTables
from drpo.checkpoints.ledger import RunLedger
from drpo.checkpoints.runs import RunTables

__all__ = [
    "METRIC_ASPECT",
    "RunInUse",
    "RunLedger",
    "RunStore",
    "StoreError",
    "TableSchema",
    "create_private_file",
    "create_tables",
    "new_run_id",
]

SCHEMA_VERSION = 1

_ADDED_COLUMNS: tuple[tuple[str, str, type], ...] = (
    ("runs", "active_seconds", float),
    ("runs", "no_better_prompt", int),
    ("candidates", "rejected", str),
    ("runs", "retrieval", str),
    ("runs", "rubric", str),
    ("llm_calls", "stage", str),
    ("llm_calls", "level", int),
    ("llm_calls", "replica", str),
    ("llm_calls", "cached_tokens", int),
    ("judgements", "expected_score", float),
    ("reply_cache", "logprobs", str),
    ("runs", "adapted", str),
)

# Spending by run, stage (examples / search / validate), level and role. Only `ok` calls were paid
# for: a cache hit, a failed request or an unparsable reply adds no tokens. `seconds` is the sum
# of call latencies (model time, overlapping when calls run in parallel); `first_started` and
# `last_finished` bound the wall-clock span.
COST_VIEW = """
create view if not exists call_costs as
select run_id, coalesce(stage, '') as stage, level, role,
       sum(outcome = 'ok') as calls,
       sum(outcome = 'cache_hit') as cache_hits,
       sum(outcome = 'error') as errors,
       sum(outcome = 'invalid') as invalid,
       coalesce(sum(case when outcome = 'ok' then prompt_tokens end), 0) as prompt_tokens,
       coalesce(sum(case when outcome = 'ok' then completion_tokens end), 0) as completion_tokens,
       coalesce(sum(case when outcome = 'ok' then cached_tokens end), 0) as cached_tokens,
       coalesce(sum(case when outcome in ('ok', 'error') then latency end), 0) as seconds,
       min(started_at) as first_started,
       max(started_at + latency) as last_finished
from llm_calls
group by run_id, coalesce(stage, ''), level, role
"""

# Who holds a run besides its pid (see drpo.checkpoints.ownership).
_CLAIM_COLUMNS: dict[str, type] = {"host": str, "pid_started": int, "claimed_at": float}


def new_run_id() -> str:
    """A new run id: the start time and a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class TableSchema(NamedTuple):
    """One table: its columns, primary key and extra indexes."""

    columns: dict[str, type]
    pk: str | tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()


def create_tables(db: sqlite_utils.Database, tables: dict[str, TableSchema]) -> None:
    """Create the tables and indexes that are missing, inside the caller's transaction.

    An existing table is left as it is: a column added to its schema later needs its own
    `add_column` for stores written before.
    """
    for name, schema in tables.items():
        db.table(name).create(schema.columns, pk=schema.pk, if_not_exists=True)
    for name, schema in tables.items():
        for columns in schema.indexes:
            db.table(name).create_index(list(columns), if_not_exists=True)


_TABLES: dict[str, TableSchema] = {
    "runs": TableSchema(
        {
            "id": str,
            "created_at": float,
            "updated_at": float,
            "status": str,
            "preset": str,
            "settings": str,
            "seed": int,
            "query_order": str,
            "best_candidate_id": str,
            "train_value": float,
            "validation_value": float,
            "baseline_validation_value": float,
            "no_better_prompt": int,
            "final_prompt": str,
            "error": str,
            "parent_run": str,
            "note": str,
            "pid": int,
            "examples": str,
            "active_seconds": float,
            # The retrieval the search used ("embeddings" or "bm25"), resolved from "auto" once,
            # so serve and eval retrieve the same examples on any host.
            "retrieval": str,
            "rubric": str,
            # The SettingsAdapted event (JSON) when the default search was cut to fit the time
            # target; `settings` holds what ran.
            "adapted": str,
            **_CLAIM_COLUMNS,
        },
        pk="id",
    ),
    "candidates": TableSchema(
        {
            "id": str,
            "run_id": str,
            "parent_id": str,
            "depth": int,
            "level": int,
            "prompt": str,
            "level_reward": float,
            "value": float,
            "carried": int,
            "survived": int,
            # Why drpo rejected the proposal before it was scored (None: it competed).
            "rejected": str,
            "created_at": float,
        },
        pk=("run_id", "id"),
        indexes=(("run_id", "level"),),
    ),
    "answers": TableSchema(
        {
            "id": str,
            "run_id": str,
            "candidate_id": str,
            "query_id": str,
            "query": str,
            "answer": str,
            "stage": str,
            "level": int,
            "reward": float,
            "created_at": float,
        },
        pk=("run_id", "id"),
        indexes=(("run_id", "candidate_id"),),
    ),
    "judgements": TableSchema(
        {
            "answer_id": str,
            "run_id": str,
            "aspect": str,
            "score": int,
            # The probability-weighted score (expected value over the score tokens), or NULL
            # when the endpoint gave no usable logprobs.
            "expected_score": float,
            "rationale": str,
            "error": str,
        },
        pk=("run_id", "answer_id", "aspect"),
    ),
    "selections": TableSchema(
        {"key": str, "query": str, "aspects": str, "analysis": str, "created_at": float},
        pk="key",
    ),
    "examples": TableSchema(
        {
            "run_id": str,
            "example_id": str,
            "query": str,
            "original_answer": str,
            "answer": str,
            "original_reward": float,
            "reward": float,
            "rounds": int,
        },
        pk=("run_id", "example_id"),
    ),
    "llm_calls": TableSchema(
        {
            "id": int,
            "run_id": str,
            "role": str,
            "model": str,
            "endpoint": str,
            "outcome": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "latency": float,
            "cache_key": str,
            "error": str,
            "tag": str,
            "started_at": float,
            "stage": str,
            "level": int,
            "replica": str,
            "cached_tokens": int,
        },
        pk="id",
        indexes=(("run_id", "role"),),
    ),
    "reply_cache": TableSchema(
        {
            "key": str,
            "texts": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "created_at": float,
            "logprobs": str,
        },
        pk="key",
    ),
    "decisions": TableSchema(
        {
            "id": int,
            "run_id": str,
            "candidate_id": str,
            "decision": str,
            "comment": str,
            "prompt": str,
            "decided_at": float,
        },
        pk="id",
    ),
}


class RunStore(RunTables, CallTables, EvaluationTables):
    """Thread-safe access to the run store database, its schema brought up to date on open."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        with self._write():
            db = self.db
            create_tables(db, _TABLES)
            runs = db.table("runs")
            for name, kind in _CLAIM_COLUMNS.items():
                if name not in runs.columns_dict:  # a store made before runs were claimed
                    runs.add_column(name, kind)
            # Stores written before these columns existed gain them (NULL for old rows).
            for table, column, kind in _ADDED_COLUMNS:
                if column not in db.table(table).columns_dict:
                    db.table(table).add_column(column, kind)
            # A store made by an older version has the view without its newer columns.
            if "call_costs" in db.view_names() and (
                "cached_tokens" not in db.view("call_costs").columns_dict
            ):
                db.execute("drop view call_costs")
            db.execute(COST_VIEW)

    def for_run(self, run_id: str) -> RunLedger:
        """This store bound to one run (or evaluation): what nodes and the model layer write to."""
        return RunLedger(self, run_id)
