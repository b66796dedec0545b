"""The statistics of an evaluation: means, pairwise win rates, bootstrap intervals, bias probes.

Everything here is a pure function of plain numbers, so it is tested on hand-computed cases.
A missing judgement is `None` and is left out of every statistic (never counted as 0); the
number left out is reported beside the statistic.

Pairwise protocol: every pair of answers is judged twice, once in each order. Each order's
verdict is a score for the first-named condition X (1 = X better, 0.5 = tie, 0 = X worse); the
pair's outcome is the mean of the two orders, so a judge that always prefers whichever answer it
reads first gives 1 and 0, which reconcile to 0.5: a tie. Position preference cancels out
instead of deciding the result.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["A", "B", "tie"]
BOOTSTRAP_SAMPLES = 2000


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the present values; None when there is none."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def stdev(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None below two values."""
    if len(values) < 2:
        return None
    centre = sum(values) / len(values)
    return math.sqrt(sum((v - centre) ** 2 for v in values) / (len(values) - 1))


def bootstrap_ci(
    values: Sequence[float],
    *,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean, resampling the values with replacement.

    Deterministic for a seed (stdlib `random`, independent of numpy's generator versions).
    None for an empty sample; a sample of identical values gives a zero-width interval.
    """
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(samples))
    tail = (1.0 - level) / 2.0
    low = means[math.floor(tail * (samples - 1))]
    high = means[math.ceil((1.0 - tail) * (samples - 1))]
    return low, high


def order_score(verdict: Verdict | None, x_first: bool) -> float | None:
    """One order's verdict as a score for condition X (X shown first when `x_first`)."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    x_won = (verdict == "A") == x_first
    return 1.0 if x_won else 0.0


def reconcile(x_first: Verdict | None, x_second: Verdict | None) -> float | None:
    """The pair's outcome for X from both orders; None unless both orders were judged.

    One order alone would bring the position bias back, so a half-judged pair is missing.
    """
    first = order_score(x_first, x_first=True)
    second = order_score(x_second, x_first=False)
    if first is None or second is None:
        return None
    return (first + second) / 2.0


def outcome_label(score: float) -> Literal["win", "tie", "loss"]:
    """A pairwise score as win (above one half), tie or loss."""
    return "win" if score > 0.5 else "loss" if score < 0.5 else "tie"


@dataclass(frozen=True)
class WinRate:
    """X's win rate against Y over the queries judged in both orders (ties count one half)."""

    x: str
    y: str
    rate: float | None
    ci: tuple[float, float] | None
    wins: int
    ties: int
    losses: int
    missing: int

    @property
    def judged(self) -> int:
        """Pairs with a verdict (wins, ties and losses)."""
        return self.wins + self.ties + self.losses


def win_rate(x: str, y: str, outcomes: Sequence[float | None], *, seed: int = 0) -> WinRate:
    """Summarise reconciled outcomes (see `reconcile`) with a bootstrap 95 % interval."""
    present = [o for o in outcomes if o is not None]
    labels = [outcome_label(o) for o in present]
    return WinRate(
        x=x,
        y=y,
        rate=mean(present),
        ci=bootstrap_ci(present, seed=seed),
        wins=labels.count("win"),
        ties=labels.count("tie"),
        losses=labels.count("loss"),
        missing=len(outcomes) - len(present),
    )


@dataclass(frozen=True)
class PositionBias:
    """How often a decisive verdict picked the answer shown first, and order consistency."""

    decisive: int
    first_chosen: int
    ties: int
    consistent_pairs: int  # both orders named the same winner (or both said tie)
    judged_pairs: int

    @property
    def first_rate(self) -> float | None:
        """0.5 for a judge without position bias; 1.0 when it always picks the first answer."""
        return self.first_chosen / self.decisive if self.decisive else None

    @property
    def consistency(self) -> float | None:
        """Share of judged pairs whose two orders agree, or None when none was judged."""
        return self.consistent_pairs / self.judged_pairs if self.judged_pairs else None


def position_bias(pairs: Sequence[tuple[Verdict | None, Verdict | None]]) -> PositionBias:
    """Position bias from (X-first verdict, X-second verdict) per pair."""
    decisive = first = ties = consistent = judged = 0
    for x_first, x_second in pairs:
        for verdict in (x_first, x_second):
            if verdict == "tie":
                ties += 1
            elif verdict is not None:
                decisive += 1
                first += verdict == "A"
        if x_first is not None and x_second is not None:
            judged += 1
            if order_score(x_first, True) == order_score(x_second, False):
                consistent += 1
    return PositionBias(decisive, first, ties, consistent, judged)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None when either side has no variance or fewer than 3 points."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their average rank
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks)."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    return pearson(_ranks(xs), _ranks(ys))


@dataclass(frozen=True)
class LengthBias:
    """Does the judge reward length? Correlations of score with answer length, and how often a
    decisive pairwise verdict chose the longer answer."""

    points: int
    pearson: float | None
    spearman: float | None
    longer_chosen: int
    decisive_unequal: int

    @property
    def longer_rate(self) -> float | None:
        """How often the longer answer won a decisive verdict between unequal lengths."""
        return self.longer_chosen / self.decisive_unequal if self.decisive_unequal else None


def length_bias(
    scored: Sequence[tuple[int, float | None]],
    verdicts: Sequence[tuple[Verdict | None, int, int]],
) -> LengthBias:
    """`scored`: (answer length, its mean score); `verdicts`: (verdict, length A, length B)."""
    pairs = [(float(length), score) for length, score in scored if score is not None]
    lengths = [p[0] for p in pairs]
    scores = [p[1] for p in pairs]
    longer = unequal = 0
    for verdict, length_a, length_b in verdicts:
        if verdict in ("A", "B") and length_a != length_b:
            unequal += 1
            longer += (verdict == "A") == (length_a > length_b)
    return LengthBias(
        points=len(pairs),
        pearson=pearson(lengths, scores),
        spearman=spearman(lengths, scores),
        longer_chosen=longer,
        decisive_unequal=unequal,
    )


@dataclass(frozen=True)
class Rate:
    """A share of answers flagged (e.g. refusals), with its bootstrap interval."""

    flagged: int
    answered: int
    missing: int
    ci: tuple[float, float] | None

    @property
    def rate(self) -> float | None:
        """Share of answered queries flagged, or None when none was answered."""
        return self.flagged / self.answered if self.answered else None


def flagged_rate(flags: Sequence[bool | None], *, seed: int = 0) -> Rate:
    """The share of True among the present flags; None (no answer) is left out and counted."""
    present = [1.0 if f else 0.0 for f in flags if f is not None]
    return Rate(
        flagged=int(sum(present)),
        answered=len(present),
        missing=sum(f is None for f in flags),
        ci=bootstrap_ci(present, seed=seed),
    )


@dataclass(frozen=True)
class Difference:
    """Condition X minus condition Y on one metric, over the queries both were measured on."""

    metric: str
    x: str
    y: str
    x_mean: float | None
    y_mean: float | None
    ci: tuple[float, float] | None
    n: int

    @property
    def difference(self) -> float | None:
        """X's mean minus Y's; None when either is missing."""
        if self.x_mean is None or self.y_mean is None:
            return None
        return self.x_mean - self.y_mean

    @property
    def excludes_zero(self) -> bool:
        """Whether the 95 % interval leaves out "no difference"."""
        return self.ci is not None and (self.ci[0] > 0.0 or self.ci[1] < 0.0)


def paired_difference(
    metric: str,
    x: str,
    y: str,
    pairs: Sequence[tuple[float | None, float | None]],
    *,
    seed: int = 0,
) -> Difference:
    """X − Y with a paired bootstrap interval: both answered the same queries, so the
    per-query differences are resampled (query difficulty cancels), not the two means apart.

    A query missing either value is left out of both means.
    """
    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    return Difference(
        metric=metric,
        x=x,
        y=y,
        x_mean=mean([a for a, _ in both]),
        y_mean=mean([b for _, b in both]),
        ci=bootstrap_ci([a - b for a, b in both], seed=seed),
        n=len(both),
    )
