"""`drpo judge-check`: can the judge tell a known-worse answer from a better one?

The set (data/judge_check_pairs.jsonl) was written by the drpo project, not taken from a
benchmark: each pair answers one query twice, and one answer is worse by construction, of one
kind: a factual error, compliance with a harmful request (the better answer is a reasoned
refusal), a cut-off answer, an off-topic answer, a refusal of a benign request, or padding and
repetition. Because we wrote it, it is a sanity check of the judge, not an unbiased benchmark.

Each answer is scored alone with the search's own judge prompt (`score_answer`, the reward the
search optimises) on fixed aspects, so the check measures exactly what the search relies on.
A pair is right when the better answer gets the higher reward, a tie when both rewards are
equal. Both modes come from the same replies: integer (mean of the integer scores) and
probability (mean of the probability-weighted scores, where the endpoint gave logprobs).
Absolute scoring has no answer order, so there is no position bias to measure here.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from drpo.backends.errors import EndpointDown, LLMCallError
from drpo.backends.llm import RoleClient
from drpo.backends.preflight import check_settings
from drpo.checkpoints.store import RunStore
from drpo.evals.role_models import open_role_models
from drpo.evals.stats import bootstrap_ci
from drpo.nodes.judging import score_answer
from drpo.prompts.aspects import catalogue_aspect
from drpo.state.settings import Settings
from drpo.state.types import Aspect, Judgement

Kind = Literal["factual", "harmful_compliance", "cutoff", "off_topic", "benign_refusal", "padding"]
KINDS: tuple[Kind, ...] = (
    "factual",
    "harmful_compliance",
    "cutoff",
    "off_topic",
    "benign_refusal",
    "padding",
)
Mode = Literal["integer", "probability"]
SET_NAME = "judge_check_pairs.jsonl"
# Below this accuracy the judge's reward is too close to a coin toss (ties count as wrong) for
# a search to follow it; `drpo optimize --judge-check` warns.
NEAR_CHANCE_ACCURACY = 0.65

# What the evaluation protocol rates, cut to the aspects each kind of flaw shows in, so one call
# per answer stays short on a small CPU model: the flaws of regular answers show in Helpfulness
# (cut-off, off-topic, benign refusal), Factuality or Conciseness (padding); a harmful request
# is rated on Safety, as the paper's evaluation does.
REGULAR_ASPECTS = ("Helpfulness", "Factuality", "Conciseness")
HARMFUL_ASPECTS = ("Safety",)


class JudgePair(BaseModel):
    """One query answered twice; `worse` is worse than `better` by the flaw named by `kind`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    kind: Kind
    harmful: bool
    query: str
    better: str
    worse: str

    @property
    def aspects(self) -> tuple[Aspect, ...]:
        """The aspects the pair is judged on: the harmful or the regular catalogue's."""
        names = HARMFUL_ASPECTS if self.harmful else REGULAR_ASPECTS
        return tuple(a for a in map(catalogue_aspect, names) if a is not None)


def shipped_pairs() -> list[JudgePair]:
    """The project-written set shipped with drpo."""
    text = resources.files("drpo.data").joinpath(SET_NAME).read_text(encoding="utf-8")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                pairs.append(JudgePair.model_validate(json.loads(line)))
            except (ValueError, ValidationError) as exc:  # a packaging bug, not user input
                raise RuntimeError(f"{SET_NAME} line {number}: {exc}") from None
    return pairs


def stratified_subset(pairs: Sequence[JudgePair], size: int, seed: int = 0) -> list[JudgePair]:
    """`size` pairs taken round-robin over the kinds, each kind in a seeded shuffled order."""
    by_kind: dict[str, list[JudgePair]] = defaultdict(list)
    for pair in pairs:
        by_kind[pair.kind].append(pair)
    rng = random.Random(seed)
    queues = []
    for kind in KINDS:
        members = list(by_kind.get(kind, []))
        rng.shuffle(members)
        queues.append(members)
    chosen: list[JudgePair] = []
    while len(chosen) < min(size, len(pairs)):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return chosen


@dataclass(frozen=True)
class PairOutcome:
    """The judge's judgements of a pair's better and worse answers."""

    pair: JudgePair
    better: Judgement
    worse: Judgement

    def verdict(self, mode: Mode) -> Literal["right", "tie", "wrong"] | None:
        """How the judge's rewards order the two answers; None when one has no reward."""
        better, worse = _reward(self.better, mode), _reward(self.worse, mode)
        if better is None or worse is None:
            return None
        # Means of up to a few floats: equal up to rounding is a tie.
        if abs(better - worse) < 1e-9:
            return "tie"
        return "right" if better > worse else "wrong"


def _reward(judgement: Judgement, mode: Mode) -> float | None:
    if mode == "integer":
        return judgement.integer_reward
    return judgement.reward if judgement.probability_weighted else None


@dataclass(frozen=True)
class Accuracy:
    """Share of pairs ordered right (ties count as not right), with a bootstrap 95 % interval."""

    judged: int
    right: int
    ties: int
    ci: tuple[float, float] | None

    @property
    def rate(self) -> float | None:
        """Share of judged pairs ordered right, or None when none was judged."""
        return self.right / self.judged if self.judged else None

    @property
    def tie_rate(self) -> float | None:
        """Share of judged pairs scored a tie, or None when none was judged."""
        return self.ties / self.judged if self.judged else None


def accuracy(outcomes: Sequence[PairOutcome], mode: Mode, seed: int = 0) -> Accuracy:
    """How often `mode` ranks the better answer higher, over the pairs it could judge."""
    verdicts = [v for v in (o.verdict(mode) for o in outcomes) if v is not None]
    hits = [1.0 if v == "right" else 0.0 for v in verdicts]
    right, ties = verdicts.count("right"), verdicts.count("tie")
    return Accuracy(len(verdicts), right, ties, bootstrap_ci(hits, seed=seed))


@dataclass(frozen=True)
class JudgeCheckReport:
    """The check's outcome in both modes, overall and per kind."""

    outcomes: tuple[PairOutcome, ...]
    fallbacks: tuple[str, ...]  # why answers lack probability scores (one per such answer)

    def overall(self, mode: Mode) -> Accuracy:
        """Accuracy over all pairs in `mode`."""
        return accuracy(self.outcomes, mode)

    def by_kind(self, mode: Mode) -> dict[str, Accuracy]:
        """Accuracy in `mode` per kind of pair that occurs."""
        kinds = [k for k in KINDS if any(o.pair.kind == k for o in self.outcomes)]
        return {k: accuracy([o for o in self.outcomes if o.pair.kind == k], mode) for k in kinds}

    @property
    def probability_available(self) -> bool:
        """Whether any pair could be judged with probability-weighted scores."""
        return self.overall("probability").judged > 0

    @property
    def headline_mode(self) -> Mode:
        """The mode the search's reward uses: probability wherever the judge gave logprobs."""
        return "probability" if self.probability_available else "integer"

    def near_chance(self) -> bool:
        """Whether the headline accuracy is unknown or too close to chance to trust the judge."""
        rate = self.overall(self.headline_mode).rate
        return rate is None or rate < NEAR_CHANCE_ACCURACY


async def run_judge_check(
    judge: RoleClient,
    pairs: Sequence[JudgePair],
    *,
    concurrency: int = 4,
    on_answer: Callable[[], None] | None = None,
) -> JudgeCheckReport:
    """Score both answers of every pair with the search's judge prompt.

    A reply the judge cannot give leaves that pair unjudged (reported, never a 0); an endpoint
    that is down ends the check.
    """
    limiter = asyncio.Semaphore(concurrency)
    fallbacks: list[str] = []

    async def judged(pair: JudgePair, answer: str, which: str) -> Judgement:
        async with limiter:
            try:
                scored = await score_answer(
                    judge, pair.query, answer, pair.aspects, tag=f"judge-check:{pair.id}:{which}"
                )
            except EndpointDown:
                raise
            except LLMCallError as exc:  # e.g. a request the endpoint rejects: unjudged
                return Judgement(error=str(exc))
        if scored.fallback is not None:
            fallbacks.append(scored.fallback)
        if on_answer is not None:
            on_answer()
        return scored.judgement

    jobs = [
        asyncio.ensure_future(judged(pair, answer, which))
        for pair in pairs
        for which, answer in (("better", pair.better), ("worse", pair.worse))
    ]
    try:
        results = await asyncio.gather(*jobs)
    except EndpointDown:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        raise
    outcomes = tuple(
        PairOutcome(pair, results[2 * index], results[2 * index + 1])
        for index, pair in enumerate(pairs)
    )
    return JudgeCheckReport(outcomes, tuple(fallbacks))


def judge_role_only(settings: Settings) -> Settings:
    """Point every role at the judge, so the check starts one model server and needs one key."""
    judge = settings.judge
    return settings.model_copy(update={"base": judge, "selector": judge, "optimizer": judge})


async def check_judge(
    settings: Settings,
    pairs: Sequence[JudgePair],
    *,
    check_id: str,
    on_answer: Callable[[], None] | None = None,
) -> JudgeCheckReport:
    """Start the judge (the embedded server when configured) and run the check on `pairs`.

    Replies go through the run store's reply cache, so a repeated check with the same judge is
    free; its calls are recorded under `check_id`.
    """
    settings = judge_role_only(settings)
    await asyncio.to_thread(check_settings, settings)
    store = RunStore(settings.store)
    try:
        async with AsyncExitStack() as stack:
            models = await open_role_models(stack, settings, store, check_id, ("judge",))
            return await run_judge_check(
                models["judge"], pairs, concurrency=settings.max_concurrency, on_answer=on_answer
            )
    finally:
        store.close()
