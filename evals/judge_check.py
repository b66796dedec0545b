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
Absolute scoring has no answer order, so there is no position bias to measure there.

The pairwise section judges each pair with `drpo eval`'s pairwise judge (the same request,
`judge_pair_order`) in both orders, better answer shown first and second. Integer mode maps the
verdict letters to 1, ½ or 0 for the better answer and averages the two orders; probability
mode averages P(better preferred) read from the verdict token. Either way a judge that only
follows the shown order lands on exactly ½, a tie, so pairwise accuracy counts a tie as half
right: chance is 50 %, as in the eval's win rates. Position consistency (both orders pick the
same answer) and the share of decisive verdicts that picked the first-shown answer show how
much the order sways the judge.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from drpo.backends.errors import EndpointDown, LLMCallError
from drpo.backends.llm import RoleClient
from drpo.backends.preflight import check_settings
from drpo.checkpoints.store import RunStore
from drpo.evals.harness import PairReading, judge_pair_order
from drpo.evals.role_models import open_role_models
from drpo.evals.stats import PositionBias, bootstrap_ci, position_bias, reconcile
from drpo.evals.summary import reconcile_chances
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
Method = Literal["absolute", "pairwise", "both"]
METHODS: tuple[Method, ...] = ("absolute", "pairwise", "both")
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
    """Share of pairs ordered right, a tie counting `tie_credit` (0 for absolute scores, ½ for
    pairwise verdicts), with a bootstrap 95 % interval."""

    judged: int
    right: int
    ties: int
    ci: tuple[float, float] | None
    tie_credit: float = 0.0

    @property
    def rate(self) -> float | None:
        """Share of judged pairs ordered right (ties credited), or None when none was judged."""
        return (self.right + self.tie_credit * self.ties) / self.judged if self.judged else None

    @property
    def tie_rate(self) -> float | None:
        """Share of judged pairs scored a tie, or None when none was judged."""
        return self.ties / self.judged if self.judged else None


class Judged(Protocol):
    """An outcome that can say whether `mode` ordered its pair right."""

    def verdict(self, mode: Mode) -> Literal["right", "tie", "wrong"] | None:
        """right, tie or wrong; None when the pair could not be judged in `mode`."""


def accuracy(
    outcomes: Sequence[Judged], mode: Mode, seed: int = 0, tie_credit: float = 0.0
) -> Accuracy:
    """How often `mode` ranks the better answer higher, over the pairs it could judge."""
    verdicts = [v for v in (o.verdict(mode) for o in outcomes) if v is not None]
    credit = {"right": 1.0, "tie": tie_credit, "wrong": 0.0}
    hits = [credit[v] for v in verdicts]
    right, ties = verdicts.count("right"), verdicts.count("tie")
    return Accuracy(len(verdicts), right, ties, bootstrap_ci(hits, seed=seed), tie_credit)


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


_T = TypeVar("_T")


async def _gather_or_cancel(jobs: Sequence[asyncio.Future[_T]]) -> list[_T]:
    """Every job's result in order; an endpoint that is down cancels the rest and ends the check."""
    try:
        return list(await asyncio.gather(*jobs))
    except EndpointDown:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        raise


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
    results = await _gather_or_cancel(jobs)
    outcomes = tuple(
        PairOutcome(pair, results[2 * index], results[2 * index + 1])
        for index, pair in enumerate(pairs)
    )
    return JudgeCheckReport(outcomes, tuple(fallbacks))


@dataclass(frozen=True)
class PairwiseOutcome:
    """The pairwise judge's readings of a pair shown better-first and better-second."""

    pair: JudgePair
    better_first: PairReading
    better_second: PairReading

    def better_score(self, mode: Mode) -> float | None:
        """The better answer's share of the preference over both orders; None unless both
        orders have a reading in `mode`."""
        if mode == "integer":
            return reconcile(self.better_first.verdict, self.better_second.verdict)
        return reconcile_chances(
            {
                "xy": self.better_first.first_probability,
                "yx": self.better_second.first_probability,
            }
        )

    def verdict(self, mode: Mode) -> Literal["right", "tie", "wrong"] | None:
        """Right when the better answer is preferred over both orders, tie at exactly ½."""
        score = self.better_score(mode)
        if score is None:
            return None
        # An average of two probabilities: equal to ½ up to rounding is a tie.
        if abs(score - 0.5) < 1e-9:
            return "tie"
        return "right" if score > 0.5 else "wrong"


@dataclass(frozen=True)
class PairwiseReport:
    """The pairwise section's outcome: accuracy in both modes, overall and per kind, and how
    much the shown order sways the judge."""

    outcomes: tuple[PairwiseOutcome, ...]
    fallbacks: tuple[str, ...]  # why verdicts lack a probability (one per such verdict)

    def overall(self, mode: Mode) -> Accuracy:
        """Accuracy over all pairs in `mode` (a tie counts half)."""
        return accuracy(self.outcomes, mode, tie_credit=0.5)

    def by_kind(self, mode: Mode) -> dict[str, Accuracy]:
        """Accuracy in `mode` per kind of pair that occurs."""
        kinds = [k for k in KINDS if any(o.pair.kind == k for o in self.outcomes)]
        return {
            k: accuracy([o for o in self.outcomes if o.pair.kind == k], mode, tie_credit=0.5)
            for k in kinds
        }

    def position(self) -> PositionBias:
        """Order consistency and first-position preference of the integer verdicts."""
        return position_bias(
            [(o.better_first.verdict, o.better_second.verdict) for o in self.outcomes]
        )

    def mean_first_probability(self) -> float | None:
        """Mean P(first-shown preferred) over all verdicts with one: ½ for a judge the order
        does not sway, since each pair shows the better answer first once and second once."""
        values = [
            r.first_probability
            for o in self.outcomes
            for r in (o.better_first, o.better_second)
            if r.first_probability is not None
        ]
        return sum(values) / len(values) if values else None

    @property
    def headline_mode(self) -> Mode:
        """Probability mode wherever the judge gave usable logprobs, else integer."""
        return "probability" if self.overall("probability").judged else "integer"


async def run_pairwise_check(
    judge: RoleClient,
    pairs: Sequence[JudgePair],
    *,
    concurrency: int = 4,
    on_answer: Callable[[], None] | None = None,
) -> PairwiseReport:
    """Judge every pair with the eval's pairwise judge in both orders.

    A reply the judge cannot give leaves that order unread (so the pair unjudged); an endpoint
    that is down ends the check.
    """
    limiter = asyncio.Semaphore(concurrency)
    fallbacks: list[str] = []
    no_logprobs = (
        "the verdict's token logprobs were missing or did not fit the reply"
        if judge.gives_logprobs
        else "the judge's endpoint gives no token logprobs"
    )

    async def read(pair: JudgePair, order: str) -> PairReading:
        first, second = (pair.better, pair.worse) if order == "xy" else (pair.worse, pair.better)
        async with limiter:
            reading = await judge_pair_order(
                judge, pair.query, first, second, tag=f"judge-check:{pair.id}:pair:{order}"
            )
        if reading.verdict is not None and reading.first_probability is None:
            fallbacks.append(no_logprobs)
        if on_answer is not None:
            on_answer()
        return reading

    jobs = [asyncio.ensure_future(read(p, order)) for p in pairs for order in ("xy", "yx")]
    readings = await _gather_or_cancel(jobs)
    outcomes = tuple(
        PairwiseOutcome(pair, readings[2 * index], readings[2 * index + 1])
        for index, pair in enumerate(pairs)
    )
    return PairwiseReport(outcomes, tuple(fallbacks))


@dataclass(frozen=True)
class CheckResults:
    """What a check ran: the absolute section, the pairwise section, or both."""

    absolute: JudgeCheckReport | None = None
    pairwise: PairwiseReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per method run


def judge_role_only(settings: Settings) -> Settings:
    """Point every role at the judge, so the check starts one model server and needs one key."""
    judge = settings.judge
    return settings.model_copy(update={"base": judge, "selector": judge, "optimizer": judge})


async def check_judge(
    settings: Settings,
    pairs: Sequence[JudgePair],
    *,
    check_id: str,
    method: Method = "absolute",
    on_answer: Callable[[], None] | None = None,
) -> CheckResults:
    """Start the judge (the embedded server when configured) and run `method` on `pairs`.

    Replies go through the run store's reply cache, so a repeated check with the same judge is
    free; its calls are recorded under `check_id`.
    """
    settings = judge_role_only(settings)
    await asyncio.to_thread(check_settings, settings)
    store = RunStore(settings.store)
    concurrency = settings.max_concurrency
    try:
        async with AsyncExitStack() as stack:
            models = await open_role_models(stack, settings, store, check_id, ("judge",))
            judge = models["judge"]
            absolute = pairwise = None
            seconds: dict[str, float] = {}
            if method in ("absolute", "both"):
                started = time.monotonic()
                absolute = await run_judge_check(
                    judge, pairs, concurrency=concurrency, on_answer=on_answer
                )
                seconds["absolute"] = time.monotonic() - started
            if method in ("pairwise", "both"):
                started = time.monotonic()
                pairwise = await run_pairwise_check(
                    judge, pairs, concurrency=concurrency, on_answer=on_answer
                )
                seconds["pairwise"] = time.monotonic() - started
            return CheckResults(absolute, pairwise, seconds)
    finally:
        store.close()
