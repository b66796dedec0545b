"""The run store's runs, their claims by a process, their candidates and review decisions."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import sqlite_utils

from drpo.checkpoints.database import RunInUse, StoreDatabase, StoreError
from drpo.checkpoints.ownership import Owner
from drpo.state.types import Candidate


class RunTables(StoreDatabase):
    """The `runs`, `candidates` and `decisions` tables."""

    def create_run(
        self,
        run_id: str,
        settings: dict[str, Any],
        query_order: Sequence[str],
        parent_run: str | None = None,
    ) -> None:
        """Insert a new run in status `running` with its settings (which hold no secret)."""
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
        """Set columns of the run's row and stamp `updated_at`."""
        fields["updated_at"] = time.time()
        with self._write():
            self.db.table("runs").update(run_id, fields)

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row, or None for an unknown id."""
        try:
            row: dict[str, Any] = self.db.table("runs").get(run_id)
        except sqlite_utils.db.NotFoundError:
            return None
        return row

    def runs(self) -> list[dict[str, Any]]:
        """Every run's row, newest first."""
        return list(self.db.table("runs").rows_where(order_by="created_at desc"))

    def record_candidate(
        self,
        run_id: str,
        candidate: Candidate,
        level: int,
        level_reward: float | None,
        survived: bool,
    ) -> None:
        """Write (or rewrite) a candidate prompt with its level reward and whether it survived."""
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
        """Set columns of one candidate's row."""
        with self._write():
            self.db.table("candidates").update((run_id, candidate_id), fields)

    def candidate(self, run_id: str, candidate_id: str) -> dict[str, Any] | None:
        """One candidate's row, or None when the run has no such candidate."""
        try:
            row: dict[str, Any] = self.db.table("candidates").get((run_id, candidate_id))
        except sqlite_utils.db.NotFoundError:
            return None
        return row

    def record_decision(
        self,
        run_id: str,
        candidate_id: str,
        decision: str,
        comment: str = "",
        prompt: str | None = None,
    ) -> None:
        """Append a person's review decision (approve / reject / edit / stop) on a candidate."""
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
