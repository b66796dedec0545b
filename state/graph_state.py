"""The graph's input, state and output schemas, with explicit reducers.

Only what the next step needs lives here: the beam, the current level's work in progress and a
few counters. Per-level lists are cleared with `Reset` when a level starts, so state does not
grow with depth; the full history is in the run store.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict

from drpo.state.types import (
    AspectSelection,
    Candidate,
    Example,
    Feedback,
    LevelScore,
    Proposal,
    Query,
    ReviewDecision,
    RunResult,
)

T = TypeVar("T")

Phase = Literal["examples", "search", "validate", "done"]


class Reset(BaseModel):
    """Written to a per-level channel to empty it before new items accumulate."""

    model_config = ConfigDict(frozen=True)
    reset: bool = True


def accumulate(current: list[T] | None, update: list[T | Reset] | Reset | None) -> list[T]:
    """Append a task's items to the level's list.

    `Reset()` empties the list; a list that starts with `Reset()` replaces it with the rest.
    """
    if isinstance(update, Reset):
        return []
    items = list(update or [])
    if items and isinstance(items[0], Reset):
        return [item for item in items[1:] if not isinstance(item, Reset)]
    return [*(current or []), *(item for item in items if not isinstance(item, Reset))]


def merge_by_key(current: dict[str, T] | None, update: dict[str, T] | Reset | None) -> dict[str, T]:
    """Merge a task's entries into the level's mapping; `Reset()` empties it."""
    if isinstance(update, Reset):
        return {}
    return {**(current or {}), **(update or {})}


class ExampleOutcome(BaseModel):
    """Stage A's result for one example."""

    model_config = ConfigDict(frozen=True)
    index: int
    example: Example
    original_reward: float | None
    reward: float | None
    rounds: int


class RunInput(TypedDict):
    """What a run is started with."""

    run_id: str


class SearchState(TypedDict):
    """The search's state between steps.

    The keys `prepare` writes are required: every later node may read them directly, and no
    node guesses a default of its own. The per-level channels are written as a level (or the
    validation round) runs, so they may be absent and are read with an empty default. Keys are
    never renamed: checkpoints of earlier runs must still load.
    """

    # Written by `prepare`, present from the first step on
    run_id: str  # the run's id in the run store and the checkpointer's thread
    phase: Phase  # which part of the run is under way
    examples: list[Example]  # the in-context examples (stage A's improved ones once it ran)
    query_order: list[str]  # the seeded order of training query ids the levels walk through
    level: int  # the current level: -1 before the first, 0 the root
    depth_limit: int  # the last level, the depth plus the skip rule's extensions
    extensions: int  # levels the skip rule has added so far
    beam: list[Candidate]  # the prompts kept at the last ranked level, best first
    feedback: dict[str, Feedback]  # per beam candidate, its weakest answer at its level
    leaders: list[Candidate]  # the best distinct prompts seen, by their own reward
    stop_requested: bool  # a person asked the search to stop
    # Per beam candidate, the answers the optimizer sees next (weakest first): this level's and
    # the recent ones of its path. Written by `prepare`, but absent in earlier runs' checkpoints.
    recent_feedback: NotRequired[dict[str, list[Feedback]]]
    # Stage A
    example_outcomes: NotRequired[Annotated[list[ExampleOutcome], accumulate]]  # per example
    # Per level (or the validation round), emptied with `Reset` when one starts
    level_queries: NotRequired[list[Query]]  # the queries the level scores its prompts on
    selections: NotRequired[Annotated[dict[str, AspectSelection], merge_by_key]]  # by query id
    # Written whole when a level starts (retrieval needs no model call), never merged.
    retrieved: NotRequired[dict[str, list[Example]]]  # in-context examples by query id
    proposals: NotRequired[Annotated[list[Proposal], accumulate]]  # the prompts to score
    scores: NotRequired[Annotated[list[LevelScore], accumulate]]  # one per (prompt, query)
    parents: NotRequired[list[Candidate]]  # the beam the level expanded
    extensions_before_level: NotRequired[int]  # `extensions` when the level started
    # Human review: decisions of the current level (or of the final pick), by candidate id
    reviewed: NotRequired[Annotated[dict[str, ReviewDecision], merge_by_key]]
    final_choice: NotRequired[str | None]  # the finalist a person approved, if any
    # Finalize
    result: NotRequired[RunResult | None]  # the run's result, once finalized


def earlier_feedback(state: SearchState) -> dict[str, list[Feedback]]:
    """The beam's recent feedback; empty in checkpoints written before it was kept."""
    return state.get("recent_feedback", {})


class RunOutput(TypedDict, total=False):
    """What a finished run hands back."""

    run_id: str
    result: RunResult | None


class SelectTask(TypedDict):
    """One selector task: choose the aspects for a query."""

    query: Query
    # For cost accounting; absent in tasks checkpointed before it was added.
    stage: NotRequired[Literal["search", "validate"]]
    level: NotRequired[int]


class RewriteTask(TypedDict):
    """One optimizer task: propose rewrites of a beam prompt."""

    candidate: Candidate
    last_feedback: Feedback | None
    level: int
    # Every answer the optimizer sees, weakest first; absent in tasks checkpointed before it.
    feedback_cases: NotRequired[list[Feedback]]


class GenerateTask(TypedDict):
    """One scoring task: answer a query under a proposal, then judge it."""

    proposal: Proposal
    query: Query
    selection: AspectSelection
    examples: list[Example]
    level: int
    stage: Literal["search", "validate"]


class ScoreOutput(TypedDict):
    """What one (candidate, query) scoring task hands back to the search."""

    scores: Annotated[list[LevelScore], accumulate]


class ScoreState(GenerateTask, ScoreOutput):
    """The scoring subgraph's state: its input task plus the score it produces."""


class EvaluateTask(TypedDict):
    """The judging half of a scoring task, with the answer to judge."""

    proposal: Proposal
    query: Query
    selection: AspectSelection
    level: int
    stage: Literal["search", "validate"]
    answer_id: str
    answer: str


class ExampleTask(TypedDict):
    """One stage A task: improve one in-context example's answer."""

    index: int
    example: Example
