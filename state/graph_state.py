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
    run_id: str


class SearchState(TypedDict, total=False):
    run_id: str
    phase: Phase
    # Stage A
    example_outcomes: Annotated[list[ExampleOutcome], accumulate]
    examples: list[Example]
    # Stage B
    query_order: list[str]
    level: int
    depth_limit: int
    extensions: int
    beam: list[Candidate]
    feedback: dict[str, Feedback]
    # Per beam candidate, the answers the optimizer sees next (weakest first): this level's and
    # the recent ones of its path, so a rewrite is not fitted to a single query.
    recent_feedback: dict[str, list[Feedback]]
    leaders: list[Candidate]
    level_queries: list[Query]
    selections: Annotated[dict[str, AspectSelection], merge_by_key]
    # Written whole when a level starts (retrieval needs no model call), never merged.
    retrieved: dict[str, list[Example]]
    proposals: Annotated[list[Proposal], accumulate]
    scores: Annotated[list[LevelScore], accumulate]
    parents: list[Candidate]
    extensions_before_level: int
    # Human review: decisions of the current level (or of the final pick), by candidate id
    reviewed: Annotated[dict[str, ReviewDecision], merge_by_key]
    final_choice: str | None
    stop_requested: bool
    # Finalize
    result: RunResult | None


class RunOutput(TypedDict, total=False):
    run_id: str
    result: RunResult | None


class SelectTask(TypedDict):
    query: Query
    # For cost accounting; absent in tasks checkpointed before it was added.
    stage: NotRequired[Literal["search", "validate"]]
    level: NotRequired[int]


class RewriteTask(TypedDict):
    candidate: Candidate
    last_feedback: Feedback | None
    level: int
    # Every answer the optimizer sees, weakest first; absent in tasks checkpointed before it.
    feedback_cases: NotRequired[list[Feedback]]


class GenerateTask(TypedDict):
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
    proposal: Proposal
    query: Query
    selection: AspectSelection
    level: int
    stage: Literal["search", "validate"]
    answer_id: str
    answer: str


class ExampleTask(TypedDict):
    index: int
    example: Example
