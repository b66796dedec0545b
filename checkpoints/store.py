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
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import sqlite_utils

from drpo.backends.llm import CachedReply, CallRecord
from drpo.checkpoints.ownership import Owner
from drpo.state.types import AspectSelection, Candidate, Example, Judgement

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

# The judgements row holding a programmatic metric's score of an answer.
METRIC_ASPECT = "(metric)"


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


# Who holds a run besides its pid (see drpo.checkpoints.ownership).
_CLAIM_COLUMNS: dict[str, type] = {"host": str, "pid_started": int, "claimed_at": float}


def new_run_id() -> str:
    """A new run id: the start time and a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class TableSchema(NamedTuple):
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


class RunStore:
    """Thread-safe access to the run store database."""

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
        self._ensure_schema()

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

    # ---- schema -----------------------------------------------------------------------------

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

    # ---- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        settings: dict[str, Any],
        query_order: Sequence[str],
        parent_run: str | None = None,
    ) -> None:
        now = time.time()
        with self._write():
            self.db.table("runs").insert(
                {
                    "id": run_id,
                    "created_at": now,
                    "updated_at": now,
                    "status": "running",
                    "preset": settings.get("preset", ""),
                    "settings": json.dumps(settings),
                    "seed": settings.get("seed", 0),
                    "query_order": json.dumps(list(query_order)),
                    "parent_run": parent_run,
                },
                pk="id",
            )

    def claim_run(self, run_id: str) -> dict[str, Any] | None:
        """Make this process the run's owner and return the run's row as it was before.

        The check and the claim are one BEGIN IMMEDIATE transaction, so of two processes claiming
        at once exactly one wins. A claim whose process is gone (a crash, a SIGKILL) is taken
        over. Raises RunInUse, writing nothing, while another live process holds the run. A
        missing run gives None and a completed one is returned unclaimed: neither is driven.
        """
        me = Owner.current()
        with self._write():
            row = self.run(run_id)
            if row is None or row["status"] == "completed":
                return row
            owner = Owner.of(row)
            if owner is not None and owner != me and owner.alive():
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["claimed_at"] or 0))
                raise RunInUse(
                    f"run {run_id} is in use by process {owner.pid} on {owner.host} "
                    f"(since {since}); wait for it to end or stop it, then resume"
                )
            self.db.table("runs").update(
                run_id,
                {
                    "pid": me.pid,
                    "host": me.host,
                    "pid_started": me.started,
                    "claimed_at": time.time(),
                    "updated_at": time.time(),
                },
            )
            return row

    def release_run(self, run_id: str) -> None:
        """Give up this process's claim on the run (a claim held by another is left alone)."""
        me = Owner.current()
        # A release that cannot be written changes nothing that matters: once this process
        # ends its claim is stale and the next claim takes it over.
        with suppress(StoreError), self._write():
            self.db.execute(
                "update runs set pid = null, host = null, pid_started = null "
                "where id = ? and pid = ? and host = ?",
                [run_id, me.pid, me.host],
            )

    def update_run(self, run_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        with self._write():
            self.db.table("runs").update(run_id, fields)

    def run(self, run_id: str) -> dict[str, Any] | None:
        try:
            row: dict[str, Any] = self.db.table("runs").get(run_id)
        except sqlite_utils.db.NotFoundError:
            return None
        return row

    def runs(self) -> list[dict[str, Any]]:
        return list(self.db.table("runs").rows_where(order_by="created_at desc"))

    def run_cost(self, run_id: str) -> dict[str, Any]:
        row = next(
            self.db.query(
                "select count(*) as calls, coalesce(sum(prompt_tokens), 0) as prompt_tokens, "
                "coalesce(sum(completion_tokens), 0) as completion_tokens, "
                "coalesce(sum(latency), 0) as seconds, "
                "sum(outcome = 'cache_hit') as cache_hits from llm_calls "
                "where run_id = ? and outcome in ('ok', 'cache_hit', 'error')",
                [run_id],
            )
        )
        return dict(row)

    def cost_breakdown(self, run_id: str) -> list[dict[str, Any]]:
        """The run's spending per stage, level and role (rows of the `call_costs` view)."""
        return [
            dict(row)
            for row in self.db.query(
                "select * from call_costs where run_id = ? "
                "order by case stage when 'examples' then 0 when 'search' then 1 "
                "when 'validate' then 2 else 3 end, level, role",
                [run_id],
            )
        ]

    def cost_by_role(self, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every model call of a run or an evaluation per role, and the totals over roles.

        Unlike `call_costs`, this counts the tokens of every outcome: the reports show what the
        calls carried, not only what was paid for.
        """
        rows = list(
            self.db.query(
                "select role, count(*) as calls, sum(outcome = 'cache_hit') as cache_hits, "
                "sum(outcome = 'invalid') as invalid, sum(outcome = 'error') as errors, "
                "coalesce(sum(prompt_tokens), 0) as prompt_tokens, "
                "coalesce(sum(completion_tokens), 0) as completion_tokens, "
                "coalesce(sum(latency), 0) as model_seconds, min(started_at) as first, "
                "max(started_at + latency) as last from llm_calls where run_id = ? "
                "group by role order by role",
                [run_id],
            )
        )
        starts = [r["first"] for r in rows if r["first"] is not None]
        ends = [r["last"] for r in rows if r["last"] is not None]
        totals = {
            "calls": sum(r["calls"] for r in rows),
            "cache_hits": sum(r["cache_hits"] or 0 for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "model_seconds": sum(r["model_seconds"] for r in rows),
            "wall_seconds": (max(ends) - min(starts)) if starts and ends else 0.0,
        }
        return rows, totals

    def spent(self, run_id: str) -> dict[str, int]:
        """Paid calls and tokens so far: what budgets are checked against."""
        row = next(
            self.db.query(
                "select coalesce(sum(calls), 0) as calls, "
                "coalesce(sum(prompt_tokens + completion_tokens), 0) as tokens "
                "from call_costs where run_id = ?",
                [run_id],
            )
        )
        return {"calls": int(row["calls"]), "tokens": int(row["tokens"])}

    # ---- search records ---------------------------------------------------------------------

    def record_candidate(
        self,
        run_id: str,
        candidate: Candidate,
        level: int,
        level_reward: float | None,
        survived: bool,
    ) -> None:
        with self._write():
            self.db.table("candidates").upsert(
                {
                    "id": candidate.id,
                    "run_id": run_id,
                    "parent_id": candidate.parent_id,
                    "depth": candidate.depth,
                    "level": level,
                    "prompt": candidate.prompt,
                    "level_reward": level_reward,
                    "value": candidate.value if candidate.path_rewards else None,
                    "carried": int(candidate.carried),
                    "survived": int(survived),
                    "created_at": time.time(),
                },
                pk=("run_id", "id"),
            )

    def record_rejected(self, run_id: str, candidate: Candidate, level: int, reason: str) -> None:
        """A proposal that never competed: drpo rejected it before scoring, for `reason`."""
        self.record_candidate(run_id, candidate, level, None, survived=False)
        self.update_candidate(run_id, candidate.id, rejected=reason)

    def update_candidate(self, run_id: str, candidate_id: str, **fields: Any) -> None:
        with self._write():
            self.db.table("candidates").update((run_id, candidate_id), fields)

    def record_answer(
        self,
        run_id: str,
        answer_id: str,
        candidate_id: str,
        query_id: str,
        query: str,
        answer: str,
        stage: str,
        level: int,
    ) -> None:
        with self._write():
            self.db.table("answers").upsert(
                {
                    "id": answer_id,
                    "run_id": run_id,
                    "candidate_id": candidate_id,
                    "query_id": query_id,
                    "query": query,
                    "answer": answer,
                    "stage": stage,
                    "level": level,
                    "created_at": time.time(),
                },
                pk=("run_id", "id"),
            )

    def record_judgement(self, run_id: str, answer_id: str, judgement: Judgement) -> None:
        rows = [
            {
                "answer_id": answer_id,
                "run_id": run_id,
                "aspect": s.aspect,
                "score": s.score,
                "expected_score": s.expected,
                "rationale": s.rationale,
                "error": None,
            }
            for s in judgement.scores
        ]
        if judgement.error is not None:
            rows.append(
                {
                    "answer_id": answer_id,
                    "run_id": run_id,
                    "aspect": "(judge)",
                    "score": None,
                    "expected_score": None,
                    "rationale": "",
                    "error": judgement.error,
                }
            )
        if judgement.metric is not None:
            # The metric's own value in [0, 1] (not the 1-5 scale the reward averages on).
            rows.append(
                {
                    "answer_id": answer_id,
                    "run_id": run_id,
                    "aspect": METRIC_ASPECT,
                    "score": judgement.metric.score,
                    "rationale": judgement.metric.reason,
                    "error": judgement.metric.error,
                }
            )
        with self._write():
            if rows:
                self.db.table("judgements").upsert_all(rows, pk=("run_id", "answer_id", "aspect"))
            self.db.table("answers").update((run_id, answer_id), {"reward": judgement.reward})

    def score_mode(self, run_id: str) -> str:
        """Which judge scores the run's rewards came from, in words, read from its judgements."""
        row = self.db.execute(
            "select count(distinct answer_id), count(distinct case when expected_score is not "
            "null then answer_id end) from judgements where run_id = ? and score is not null",
            [run_id],
        ).fetchone()
        judged, weighted = int(row[0] or 0), int(row[1] or 0)
        if judged == 0:
            return "no judged answers yet"
        if weighted == judged:
            return "probability-weighted (from the judge's token logprobs)"
        if weighted == 0:
            return "integer (the judge's endpoint gave no usable logprobs)"
        return (
            f"mixed: {weighted} of {judged} judged answers probability-weighted, the rest integer"
        )

    def selection(self, key: str) -> AspectSelection | None:
        try:
            row = self.db.table("selections").get(key)
        except sqlite_utils.db.NotFoundError:
            return None
        return AspectSelection.model_validate_json(row["aspects"])

    def record_selection(self, key: str, query: str, selection: AspectSelection) -> None:
        with self._write():
            self.db.table("selections").upsert(
                {
                    "key": key,
                    "query": query,
                    "aspects": selection.model_dump_json(),
                    "analysis": selection.analysis,
                    "created_at": time.time(),
                },
                pk="key",
            )

    def record_example(
        self,
        run_id: str,
        original: Example,
        improved: Example,
        original_reward: float | None,
        reward: float | None,
        rounds: int,
    ) -> None:
        with self._write():
            self.db.table("examples").upsert(
                {
                    "run_id": run_id,
                    "example_id": original.id,
                    "query": original.query,
                    "original_answer": original.answer,
                    "answer": improved.answer,
                    "original_reward": original_reward,
                    "reward": reward,
                    "rounds": rounds,
                },
                pk=("run_id", "example_id"),
            )

    def record_decision(
        self,
        run_id: str,
        candidate_id: str,
        decision: str,
        comment: str = "",
        prompt: str | None = None,
    ) -> None:
        with self._write():
            self.db.table("decisions").insert(
                {
                    "run_id": run_id,
                    "candidate_id": candidate_id,
                    "decision": decision,
                    "comment": comment,
                    "prompt": prompt,
                    "decided_at": time.time(),
                }
            )

    # ---- LLM calls and reply cache ----------------------------------------------------------

    def record_call(self, run_id: str, record: CallRecord) -> None:
        with self._write():
            self._insert_call(run_id, record)

    def _insert_call(self, run_id: str, record: CallRecord) -> None:
        self.db.table("llm_calls").insert(
            {
                "run_id": run_id,
                "role": record.role,
                "model": record.model,
                "endpoint": record.endpoint,
                "outcome": record.outcome,
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "latency": record.latency,
                "cache_key": record.cache_key,
                "error": record.error,
                "tag": record.tag,
                "started_at": record.started_at,
                "stage": record.stage,
                "level": record.level,
                "replica": record.replica or record.endpoint,
                "cached_tokens": record.cached_tokens,
            }
        )

    def cached_reply(self, key: str) -> CachedReply | None:
        try:
            row = self.db.table("reply_cache").get(key)
        except sqlite_utils.db.NotFoundError:
            return None
        logprobs = row.get("logprobs")
        return CachedReply(
            tuple(json.loads(row["texts"])),
            row["prompt_tokens"],
            row["completion_tokens"],
            tuple(json.loads(logprobs)) if logprobs else None,
        )

    def put_reply(
        self,
        key: str,
        reply: CachedReply,
        run_id: str | None = None,
        record: CallRecord | None = None,
    ) -> None:
        """Store a reply; with `record`, log the call that paid for it in the same transaction."""
        with self._write():
            if record is not None and run_id is not None:
                self._insert_call(run_id, record)
            self.db.table("reply_cache").upsert(
                {
                    "key": key,
                    "texts": json.dumps(list(reply.texts)),
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "created_at": time.time(),
                    "logprobs": json.dumps(list(reply.logprobs))
                    if reply.logprobs is not None
                    else None,
                },
                pk="key",
            )

    def candidate(self, run_id: str, candidate_id: str) -> dict[str, Any] | None:
        try:
            row: dict[str, Any] = self.db.table("candidates").get((run_id, candidate_id))
        except sqlite_utils.db.NotFoundError:
            return None
        return row

    def calls(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.table("llm_calls").rows_where("run_id = ?", [run_id], order_by="id"))

    def close(self) -> None:
        self.db.conn.close()


class RunRecorder:
    """The run store seen from one run: the sink and cache the LLM layer writes to."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def record_call(self, record: CallRecord) -> None:
        self.store.record_call(self.run_id, record)

    def get(self, key: str) -> CachedReply | None:
        return self.store.cached_reply(key)

    def put(self, key: str, reply: CachedReply, record: CallRecord | None = None) -> None:
        self.store.put_reply(key, reply, self.run_id, record)
