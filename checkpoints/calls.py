"""The run store's model calls (`llm_calls`), the reply cache and what the calls cost."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from drpo.backends.llm import CachedReply, CallRecord
from drpo.checkpoints.database import StoreDatabase
from drpo.state.types import RunCost


class CallTables(StoreDatabase):
    """The `llm_calls` and `reply_cache` tables and the `call_costs` view over them."""

    def record_call(self, run_id: str, record: CallRecord) -> None:
        """Append one model call (role, model, tokens, latency, outcome; never a key)."""
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

    def calls(self, run_id: str) -> list[dict[str, Any]]:
        """The run's (or an evaluation's) model calls in the order they were recorded."""
        return list(self.db.table("llm_calls").rows_where("run_id = ?", [run_id], order_by="id"))

    def cached_reply(self, key: str) -> CachedReply | None:
        """The stored reply for a cache key, or None."""
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

    def run_cost(self, run_id: str) -> RunCost:
        """The run's calls, tokens and model time so far, cache hits and failed calls included."""
        row = next(
            self.db.query(
                "select count(*) as calls, coalesce(sum(prompt_tokens), 0) as prompt_tokens, "
                "coalesce(sum(completion_tokens), 0) as completion_tokens, "
                "coalesce(sum(latency), 0) as seconds, "
                "coalesce(sum(outcome = 'cache_hit'), 0) as cache_hits from llm_calls "
                "where run_id = ? and outcome in ('ok', 'cache_hit', 'error')",
                [run_id],
            )
        )
        return RunCost.model_validate(row)

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
