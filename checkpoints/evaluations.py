"""The run store's evaluations of candidates: answers, judgements, aspect selections, examples.

(The eval harness's own tables, `eval_*`, are in drpo.evals.records.)
"""

from __future__ import annotations

import time

import sqlite_utils

from drpo.checkpoints.database import StoreDatabase
from drpo.state.types import AspectSelection, Example, Judgement

# The judgements row holding a programmatic metric's score of an answer.
METRIC_ASPECT = "(metric)"


class EvaluationTables(StoreDatabase):
    """The `answers`, `judgements`, `selections` and `examples` tables."""

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
        """Write the base model's answer to one query under one candidate prompt."""
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
        """Write a row per scored aspect (plus the judge's error and the metric), and the reward."""
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
        """The selector's stored aspects for a cache key, or None."""
        try:
            row = self.db.table("selections").get(key)
        except sqlite_utils.db.NotFoundError:
            return None
        return AspectSelection.model_validate_json(row["aspects"])

    def record_selection(self, key: str, query: str, selection: AspectSelection) -> None:
        """Store the selector's aspects for a query under its cache key."""
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
        """Write stage A's rewrite of one in-context example with both rewards."""
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
