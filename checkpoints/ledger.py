"""The run store bound to one run: what nodes and the LLM layer write, without run ids.

Nodes get a `RunLedger` through the run context (typed there by drpo.nodes.context.SearchLedger,
since nodes sit beside checkpoints, not above it); the model layer uses the same object as its
reply cache and call sink, so a paid call and its reply are written in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drpo.backends.llm import CachedReply, CallRecord
from drpo.state.types import AspectSelection, Candidate, Example, Judgement, RunCost

if TYPE_CHECKING:
    from drpo.checkpoints.store import RunStore


class RunLedger:
    """Everything one run (or one evaluation) records, with its id bound once."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    # The model layer's reply cache and call sink (drpo.backends.llm's ReplyCache / CallSink).

    def record_call(self, record: CallRecord) -> None:
        """Append one model call of this run."""
        self.store.record_call(self.run_id, record)

    def get(self, key: str) -> CachedReply | None:
        """The cached reply for `key` (the cache is shared by every run in the store)."""
        return self.store.cached_reply(key)

    def put(self, key: str, reply: CachedReply, record: CallRecord | None = None) -> None:
        """Cache a reply and, with `record`, log the call that paid for it in one transaction."""
        self.store.put_reply(key, reply, self.run_id, record)

    # What the search's nodes record.

    def update_run(self, **fields: Any) -> None:
        """Set columns of this run's row."""
        self.store.update_run(self.run_id, **fields)

    def cost(self) -> RunCost:
        """This run's calls, tokens and model time so far."""
        return self.store.run_cost(self.run_id)

    def spent(self) -> dict[str, int]:
        """Paid calls and tokens so far: what budgets are checked against."""
        return self.store.spent(self.run_id)

    def record_candidate(
        self, candidate: Candidate, level: int, level_reward: float | None, survived: bool
    ) -> None:
        """Write a candidate prompt with its level reward and whether it survived the level."""
        self.store.record_candidate(self.run_id, candidate, level, level_reward, survived)

    def record_rejected(self, candidate: Candidate, level: int, reason: str) -> None:
        """Write a proposal drpo rejected before scoring, with the reason."""
        self.store.record_rejected(self.run_id, candidate, level, reason)

    def record_answer(
        self,
        answer_id: str,
        candidate_id: str,
        query_id: str,
        query: str,
        answer: str,
        stage: str,
        level: int,
    ) -> None:
        """Write the base model's answer to a query under a candidate prompt."""
        self.store.record_answer(
            self.run_id, answer_id, candidate_id, query_id, query, answer, stage, level
        )

    def record_judgement(self, answer_id: str, judgement: Judgement) -> None:
        """Write the judge's scores of an answer and the answer's reward."""
        self.store.record_judgement(self.run_id, answer_id, judgement)

    def selection(self, key: str) -> AspectSelection | None:
        """The selector's cached aspects for a key (shared by every run), or None."""
        return self.store.selection(key)

    def record_selection(self, key: str, query: str, selection: AspectSelection) -> None:
        """Cache the selector's aspects for a query."""
        self.store.record_selection(key, query, selection)

    def record_example(
        self,
        original: Example,
        improved: Example,
        original_reward: float | None,
        reward: float | None,
        rounds: int,
    ) -> None:
        """Write stage A's rewrite of an in-context example."""
        self.store.record_example(self.run_id, original, improved, original_reward, reward, rounds)

    def record_decision(
        self, candidate_id: str, decision: str, comment: str = "", prompt: str | None = None
    ) -> None:
        """Write a person's review decision on a candidate."""
        self.store.record_decision(self.run_id, candidate_id, decision, comment, prompt)
