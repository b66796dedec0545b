"""The runtime context every node receives: settings, the run's id, its models and its records.

The context is not checkpointed (LangGraph passes it at invocation), so it may hold live objects
such as HTTP clients; a resumed run rebuilds it from the settings stored with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from drpo.backends.factory import RoleModels
from drpo.backends.retrieval import ExampleRetriever
from drpo.nodes.budget import BudgetGate
from drpo.nodes.metric import Metric
from drpo.nodes.policy import Schedule, schedule
from drpo.prompts.rubric import BUILTIN_RUBRIC, Rubric
from drpo.state.settings import Settings
from drpo.state.types import AspectSelection, Candidate, Example, Judgement, Query, RunCost


class SearchLedger(Protocol):
    """What nodes record about their run, with the run id bound once.

    Implemented by drpo.checkpoints.ledger.RunLedger (`RunStore.for_run(run_id)`); declared here
    because nodes may not import the run store's package.
    """

    def record_candidate(
        self, candidate: Candidate, level: int, level_reward: float | None, survived: bool
    ) -> None:
        """Write a candidate prompt with its level reward and whether it survived the level."""

    def record_rejected(self, candidate: Candidate, level: int, reason: str) -> None:
        """Write a proposal rejected before scoring, with the reason."""

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

    def record_judgement(self, answer_id: str, judgement: Judgement) -> None:
        """Write the judge's scores of an answer and the answer's reward."""

    def selection(self, key: str) -> AspectSelection | None:
        """The selector's cached aspects for a key, or None."""

    def record_selection(self, key: str, query: str, selection: AspectSelection) -> None:
        """Cache the selector's aspects for a query."""

    def record_example(
        self,
        original: Example,
        improved: Example,
        original_reward: float | None,
        reward: float | None,
        rounds: int,
    ) -> None:
        """Write stage A's rewrite of an in-context example."""

    def record_decision(
        self, candidate_id: str, decision: str, comment: str = "", prompt: str | None = None
    ) -> None:
        """Write a person's review decision on a candidate."""

    def update_run(self, **fields: Any) -> None:
        """Set columns of the run's row."""

    def cost(self) -> RunCost:
        """The run's calls, tokens and model time so far."""


@dataclass
class RunData:
    """A run's training and validation queries and its seed examples, as loaded."""

    train: list[Query]
    validation: list[Query]
    examples: list[Example]


class RetrieverFactory(Protocol):
    """Builds the retriever over a run's current example set."""

    def __call__(self, examples: list[Example]) -> ExampleRetriever:
        """A retriever over `examples`, of the kind the run uses."""


@dataclass
class RunContext:
    """Everything a node needs besides the state: settings, models, records, data, budget."""

    run_id: str
    settings: Settings
    models: RoleModels
    ledger: SearchLedger
    retriever_for: RetrieverFactory
    train: list[Query] = field(default_factory=list)
    validation: list[Query] = field(default_factory=list)
    seed_examples: list[Example] = field(default_factory=list)
    budget: BudgetGate | None = None
    # Set once the run has warned that the judge gave no usable logprobs (one warning a run).
    warned_integer_scores: bool = False
    rubric: Rubric = BUILTIN_RUBRIC
    metric: Metric | None = None

    @property
    def schedule(self) -> Schedule:
        """The run's schedule: the same numbers the estimate and the embedding warm-up use."""
        return schedule(self.settings, len(self.seed_examples), len(self.validation))

    def check_budget(self) -> None:
        """Called first by every model-calling node: raises BudgetReached at a step boundary."""
        if self.budget is not None:
            self.budget.check()
