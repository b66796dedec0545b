"""Value types shared by every layer: data records, aspects, judgements, candidates, results.

They are frozen pydantic models at stable module paths, because LangGraph checkpoints store the
module path of every value they serialise and an old run must still load after a refactor.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Category = Literal[
    "informational", "advice", "reasoning", "coding", "creative", "harmful", "borderline", "general"
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Example(_Frozen):
    """An in-context example: a query with a model answer to imitate."""

    id: str
    query: str
    answer: str
    category: Category = "general"


class Query(_Frozen):
    """A training, validation or evaluation query."""

    id: str
    query: str
    category: Category = "general"
    harmful: bool = False
    # The expected answer, when the task has one: the judge grades against it (reference-guided
    # judging) and a metric receives it.
    reference: str | None = None


class Aspect(_Frozen):
    """A reward aspect: what a good answer does in one respect."""

    name: str
    definition: str
    proposed: bool = False
    weight: float = Field(default=1.0, ge=0.0)


class AspectSelection(_Frozen):
    """The selector's choice of aspects for one query."""

    query_id: str
    analysis: str = ""
    aspects: tuple[Aspect, ...]


class AspectScore(_Frozen):
    """One aspect's 1–5 score; `score` is None when the judge gave no usable value."""

    aspect: str
    score: int | None = Field(default=None, ge=1, le=5)
    rationale: str = ""
    # The probability-weighted score: the expected value over the 1–5 score tokens, read from
    # the judge's token logprobs; None when the endpoint gave none (then `score` is the reward).
    expected: float | None = Field(default=None, ge=1, le=5)
    weight: float = Field(default=1.0, ge=0.0)


class MetricScore(_Frozen):
    """A metric's verdict on an answer: a value in [0, 1], or missing with its error."""

    name: str
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    reason: str = ""
    error: str | None = None
    weight: float = Field(default=1.0, ge=0.0)

    @property
    def on_aspect_scale(self) -> float | None:
        """The value on the judge's 1–5 scale, so the two can be averaged."""
        return None if self.score is None else 1.0 + 4.0 * self.score


class Judgement(_Frozen):
    """The judge's verdict on one answer; `error` is set when the reply could not be parsed."""

    scores: tuple[AspectScore, ...] = ()
    error: str | None = None
    metric: MetricScore | None = None

    @property
    def reward(self) -> float | None:
        """Weighted mean of the usable scores (aspects and metric), or None when there is none.

        A missing score is left out rather than counted as 0. The probability-weighted aspect
        scores are used when every usable aspect has one: integers from a small judge are nearly
        all equal, while the expected values still differ.
        """
        return self._weighted_mean(probability=self.probability_weighted)

    @property
    def integer_reward(self) -> float | None:
        """The same weighted mean from the integer scores, whatever the probability scores say."""
        return self._weighted_mean(probability=False)

    def _weighted_mean(self, *, probability: bool) -> float | None:
        weighted = [
            (s.expected if probability and s.expected is not None else float(s.score), s.weight)
            for s in self.scores
            if s.score is not None
        ]
        if self.metric is not None and self.metric.on_aspect_scale is not None:
            weighted.append((self.metric.on_aspect_scale, self.metric.weight))
        total = sum(weight for _, weight in weighted)
        if not weighted or total <= 0:
            return None
        return sum(value * weight for value, weight in weighted) / total

    @property
    def probability_weighted(self) -> bool:
        """True when every usable aspect score has its probability-weighted value."""
        usable = [s for s in self.scores if s.score is not None]
        return bool(usable) and all(s.expected is not None for s in usable)


class Feedback(_Frozen):
    """What the optimizer sees about a prompt: a query, the answer it got, and its judgement."""

    query: str
    answer: str
    judgement: Judgement


class Candidate(_Frozen):
    """A node of the search tree: one system prompt with its lineage and path rewards."""

    id: str
    prompt: str
    parent_id: str | None = None
    depth: int = 0
    # Mean reward of this prompt at each level of its path (the root's level included).
    path_rewards: tuple[float, ...] = ()
    # The last prompt versions on this path, oldest first, for the optimizer's history.
    ancestry: tuple[str, ...] = ()
    carried: bool = False

    @property
    def value(self) -> float:
        """Path value: the mean reward along the path; -inf for an unscored candidate."""
        if not self.path_rewards:
            return -math.inf
        return sum(self.path_rewards) / len(self.path_rewards)


class LevelScore(_Frozen):
    """One candidate's answer to one of the level's queries, judged."""

    candidate_id: str
    query_id: str
    answer_id: str
    reward: float | None
    feedback: Feedback


class Proposal(_Frozen):
    """A child candidate proposed at a level, before it is scored."""

    candidate: Candidate
    parent_feedback: Feedback | None = None
    # True only when the skip rule carried the parent forward; a parent carried because the
    # optimizer failed must not earn the depth extension the skip rule grants.
    skipped: bool = False


RunStatus = Literal["running", "waiting", "paused", "completed", "failed", "stopped"]


class RunCost(_Frozen):
    """What a run's model calls cost so far: paid and cached calls, tokens and model time."""

    # Calls that reached a model or the reply cache (an unparsable reply is not counted).
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The sum of call latencies: model time, overlapping when calls ran in parallel.
    seconds: float = 0.0
    cache_hits: int = 0

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


class RunResult(_Frozen):
    """The outcome of a run, with lineage and cost counters."""

    run_id: str
    status: RunStatus
    prompt: str
    candidate_id: str
    train_value: float | None
    validation_value: float | None = None
    baseline_validation_value: float | None = None
    # True when the result is the starting prompt: no rewrite validated better than it.
    no_better_prompt: bool = False
    lineage: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    levels: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class ReviewScore(_Frozen):
    """One answer behind a proposed prompt, as a reviewer sees it."""

    query: str
    answer: str
    reward: float | None
    scores: tuple[AspectScore, ...] = ()


class ReviewRequest(_Frozen):
    """What a person is asked to decide on: the interrupt payload of the approve node."""

    kind: Literal["edit", "final"]
    run_id: str
    candidate_id: str
    parent_id: str | None
    level: int
    prompt: str
    parent_prompt: str
    diff: str
    value: float | None
    parent_value: float | None
    evidence: tuple[ReviewScore, ...] = ()
    calls: int = 0
    tokens: int = 0
    position: int = 1
    pending: int = 1


class ReviewDecision(_Frozen):
    """A person's decision; `prompt` is the replacement text of an edit."""

    candidate_id: str
    decision: Literal["approve", "reject", "edit", "stop"]
    prompt: str | None = None
    comment: str = ""
