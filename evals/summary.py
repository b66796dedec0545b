"""Summarise a stored evaluation: per-aspect means per condition, win rates, lengths, biases,
and the judge-free refusal and over-refusal rates.

The summary is computed from the evaluation tables alone, so the table the CLI prints right
after an evaluation and a report rendered later from the database show the same numbers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from drpo.checkpoints.store import RunStore
from drpo.evals.differences import LOOK_ALIKE_CATEGORY, condition_differences
from drpo.evals.records import eval_row, eval_rows
from drpo.evals.refusal import is_refusal
from drpo.evals.stats import (
    Difference,
    LengthBias,
    PositionBias,
    Rate,
    Verdict,
    WinRate,
    bootstrap_ci,
    flagged_rate,
    length_bias,
    mean,
    position_bias,
    reconcile,
    win_rate,
)
from drpo.prompts.aspects import EVAL_ASPECTS_HARMFUL, EVAL_ASPECTS_REGULAR

ASPECT_ORDER = (*EVAL_ASPECTS_REGULAR, *EVAL_ASPECTS_HARMFUL)


@dataclass(frozen=True)
class AspectStat:
    """One aspect's mean score under a condition, with judged and missing counts."""

    mean: float | None
    judged: int
    missing: int


@dataclass(frozen=True)
class ConditionStats:
    """One condition's scores, lengths and refusal rates."""

    name: str
    source: str
    system_prompt: str
    examples: int
    top_k: int
    answers: int
    missing_answers: int
    aspects: dict[str, AspectStat]
    overall: float | None
    overall_ci: tuple[float, float] | None
    judged_answers: int
    mean_words: float | None
    # Judge-free: refusals among answers to harmful queries (higher is safer) and among
    # answers to benign look-alikes (over-refusal, lower is better); None without such queries.
    refusal: Rate | None = None
    over_refusal: Rate | None = None


@dataclass(frozen=True)
class PairStats:
    """One compared pair's win rate, position bias and answer lengths."""

    result: WinRate
    position: PositionBias
    mean_words_x: float | None
    mean_words_y: float | None
    # "probability": outcomes are the judge's preference probabilities (both orders averaged);
    # "verdict": 1 / 0.5 / 0 per order, as when the endpoint gives no logprobs.
    scoring: str = "verdict"


@dataclass(frozen=True)
class QueryDetail:
    """One query's answers and scores under each condition, and its pair outcomes."""

    query_id: str
    query: str
    harmful: bool
    answers: dict[str, dict[str, Any]]  # condition → answer, words, score, scores by aspect
    outcomes: dict[str, float | None]  # "x vs y" → reconciled outcome for x


@dataclass
class EvalSummary:
    """A stored evaluation summarised: what the CLI table and the report show."""

    eval_id: str
    status: str
    created_at: float
    finished_at: float | None
    drpo_run: str | None
    base_model: str
    judge_model: str
    judge_is_base: bool
    absolute_template: str
    pairwise_template: str
    seed: int
    metrics: tuple[str, ...]
    queries: int
    harmful_queries: int
    overlap: list[dict[str, Any]]
    conditions: list[ConditionStats]
    pairs: list[PairStats]
    position: PositionBias
    length: LengthBias
    cost: dict[str, Any]
    details: list[QueryDetail] = field(default_factory=list)
    error: str | None = None
    # Each condition minus plain per metric, with paired bootstrap intervals.
    differences: list[Difference] = field(default_factory=list)
    # "probability" when every absolute score has its probability-weighted value (the expected
    # score over the 1-5 tokens), which the means then use; else "integer".
    absolute_scoring: str = "integer"
    absolute_fallback: str | None = None

    @property
    def aspects(self) -> list[str]:
        """The aspects judged under any condition, in the catalogue's order, others after."""
        present = {a for c in self.conditions for a in c.aspects}
        return [a for a in ASPECT_ORDER if a in present] + sorted(present - set(ASPECT_ORDER))


def eval_cost(store: RunStore, eval_id: str) -> dict[str, Any]:
    """Calls, tokens and time of an evaluation, per role, from `llm_calls`."""
    roles, totals = store.cost_by_role(eval_id)
    return {"roles": roles, **totals}


def refusal_rates(answers: list[dict[str, Any]], seed: int) -> tuple[Rate | None, Rate | None]:
    """Refusal rate on harmful queries and over-refusal rate on benign look-alikes."""

    def rate(rows: list[dict[str, Any]]) -> Rate | None:
        flags = [None if a["answer"] is None else is_refusal(a["answer"]) for a in rows]
        return flagged_rate(flags, seed=seed) if rows else None

    harmful = [a for a in answers if a["harmful"]]
    look_alikes = [a for a in answers if not a["harmful"] and a["category"] == LOOK_ALIKE_CATEGORY]
    return rate(harmful), rate(look_alikes)


def reconcile_chances(first_chance: dict[str, float | None]) -> float | None:
    """X's preference probability from both orders: "xy" shows X first, "yx" shows it second."""
    xy, yx = first_chance.get("xy"), first_chance.get("yx")
    if xy is None or yx is None:
        return None
    return (xy + (1.0 - yx)) / 2.0


def summarize(store: RunStore, eval_id: str) -> EvalSummary:
    """Build the summary of a stored evaluation (raises KeyError for an unknown id)."""
    row = eval_row(store, eval_id)
    if row is None:
        raise KeyError(eval_id)
    seed = int(row["seed"] or 0)
    answers = eval_rows(store, "eval_answers", eval_id)
    scores = eval_rows(store, "eval_scores", eval_id)
    pairs = eval_rows(store, "eval_pairs", eval_id)
    queries = json.loads(row["queries"] or "[]")
    conditions_meta = json.loads(row["conditions"] or "[]")

    absolute_scoring = scoring_mode(scores)
    for score in scores:
        score["value"] = score_value(score, absolute_scoring)
    by_answer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for score in scores:
        by_answer[score["answer_id"]].append(score)
    answer_mean = {key: mean([s["value"] for s in rows]) for key, rows in by_answer.items()}
    condition_stats = [
        _condition_stats(meta, answers, scores, answer_mean, seed) for meta in conditions_meta
    ]
    verdicts, pair_stats, outcomes_by_query = _pair_stats(
        json.loads(row["pairs"] or "[]"), pairs, answers, queries, seed
    )
    all_orders = [(given.get("xy"), given.get("yx")) for given in verdicts.values()]
    details = [
        _query_detail(query, conditions_meta, answers, by_answer, answer_mean, outcomes_by_query)
        for query in queries
    ]

    return EvalSummary(
        eval_id=eval_id,
        status=row["status"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        drpo_run=row["drpo_run"],
        base_model=row["base_model"] or "",
        judge_model=row["judge_model"] or "",
        judge_is_base=bool(row["judge_is_base"]),
        absolute_template=row["absolute_template"] or "",
        pairwise_template=row["pairwise_template"] or "",
        seed=seed,
        metrics=tuple(json.loads(row.get("metrics") or '["judge", "refusal"]')),
        queries=len(queries),
        harmful_queries=sum(bool(q.get("harmful")) for q in queries),
        overlap=json.loads(row["overlap"] or "[]"),
        conditions=condition_stats,
        pairs=pair_stats,
        position=position_bias(all_orders),
        length=_length_bias(answers, pairs, answer_mean),
        cost=eval_cost(store, eval_id),
        details=details,
        error=row["error"],
        differences=condition_differences(
            queries, answers, [m["name"] for m in conditions_meta], answer_mean, seed
        ),
        absolute_scoring=absolute_scoring,
        absolute_fallback=row.get("absolute_fallback"),
    )


def scoring_mode(scores: list[dict[str, Any]]) -> str:
    """ "probability" when every present score has its expected value: one scale for all."""
    present = [s for s in scores if s["score"] is not None]
    if present and all(s.get("expected") is not None for s in present):
        return "probability"
    return "integer"


def score_value(score: dict[str, Any], mode: str) -> float | None:
    """The number a score counts as: its expected value in probability mode, else the integer."""
    if score["score"] is None:
        return None
    return float(score["expected"]) if mode == "probability" else float(score["score"])


def _length_bias(
    answers: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    answer_mean: dict[str, float | None],
) -> LengthBias:
    """How answer length goes with the judge's scores and with its pairwise verdicts."""
    scored = [
        (a["length_words"], answer_mean.get(a["id"]))
        for a in answers
        if a["length_words"] is not None
    ]
    pair_lengths = [
        (p["verdict"], p["length_first"], p["length_second"])
        for p in pairs
        if p["length_first"] is not None and p["length_second"] is not None
    ]
    return length_bias(scored, pair_lengths)


def _condition_stats(
    meta: dict[str, Any],
    answers: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    answer_mean: dict[str, float | None],
    seed: int,
) -> ConditionStats:
    """One condition's answers, aspect means, overall score with its interval, and refusals."""
    name = meta["name"]
    mine = [a for a in answers if a["condition"] == name]
    aspect_rows: dict[str, list[float | None]] = defaultdict(list)
    for score in scores:
        if score["condition"] == name:
            aspect_rows[score["aspect"]].append(score["value"])
    overall = [answer_mean.get(a["id"]) for a in mine]
    present = [v for v in overall if v is not None]
    words = [a["length_words"] for a in mine if a["length_words"] is not None]
    refusal, over_refusal = refusal_rates(mine, seed)
    return ConditionStats(
        name=name,
        source=meta.get("source", ""),
        system_prompt=meta.get("system_prompt", ""),
        examples=int(meta.get("examples", 0)),
        top_k=int(meta.get("top_k", 0)),
        answers=len(mine),
        missing_answers=sum(a["answer"] is None for a in mine),
        aspects={
            aspect: AspectStat(
                mean=mean(values),
                judged=sum(v is not None for v in values),
                missing=sum(v is None for v in values),
            )
            for aspect, values in aspect_rows.items()
        },
        overall=mean(present),
        overall_ci=bootstrap_ci(present, seed=seed),
        judged_answers=len(present),
        mean_words=mean([float(w) for w in words]),
        refusal=refusal,
        over_refusal=over_refusal,
    )


_PairKey = tuple[str, str, str]


def _pair_stats(
    compared: list[list[str]],
    pairs: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    seed: int,
) -> tuple[
    dict[_PairKey, dict[str, Verdict | None]],
    list[PairStats],
    dict[str, dict[str, float | None]],
]:
    """The verdicts by pair and order, each compared pair's win rate, and outcomes by query."""
    verdicts: dict[_PairKey, dict[str, Verdict | None]] = defaultdict(dict)
    first_chance: dict[_PairKey, dict[str, float | None]] = defaultdict(dict)
    for pair in pairs:
        pair_key = (pair["x"], pair["y"], pair["query_id"])
        verdicts[pair_key][pair["shown_order"]] = pair["verdict"]
        first_chance[pair_key][pair["shown_order"]] = pair.get("first_probability")
    words_of = {a["id"]: a["length_words"] for a in answers}
    pair_stats = []
    outcomes_by_query: dict[str, dict[str, float | None]] = defaultdict(dict)
    for x, y in (tuple(p) for p in compared):
        outcomes: list[float | None] = []
        chances: list[float | None] = []
        orders: list[tuple[Verdict | None, Verdict | None]] = []
        for query in queries:
            given = verdicts.get((x, y, query["id"]), {})
            xy, yx = given.get("xy"), given.get("yx")
            outcomes.append(reconcile(xy, yx))
            chances.append(reconcile_chances(first_chance.get((x, y, query["id"]), {})))
            orders.append((xy, yx))
        # Probabilities only when every judged pair has them: one scale for the whole rate.
        judged = [o is not None for o in outcomes]
        scoring = (
            "probability"
            if any(judged) and all(c is not None for c, j in zip(chances, judged, strict=True) if j)
            else "verdict"
        )
        used = chances if scoring == "probability" else outcomes
        for query, outcome in zip(queries, used, strict=True):
            outcomes_by_query[query["id"]][f"{x} vs {y}"] = outcome
        pair_stats.append(
            PairStats(
                result=win_rate(x, y, used, seed=seed),
                position=position_bias(orders),
                mean_words_x=mean([words_of.get(f"{x}:{q['id']}") for q in queries]),
                mean_words_y=mean([words_of.get(f"{y}:{q['id']}") for q in queries]),
                scoring=scoring,
            )
        )
    return verdicts, pair_stats, outcomes_by_query


def _query_detail(
    query: dict[str, Any],
    conditions_meta: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    by_answer: dict[str, list[dict[str, Any]]],
    answer_mean: dict[str, float | None],
    outcomes_by_query: dict[str, dict[str, float | None]],
) -> QueryDetail:
    """One query's answer, length and scores under each condition, and its pair outcomes."""
    per_condition = {}
    for meta in conditions_meta:
        key = f"{meta['name']}:{query['id']}"
        answer = next((a for a in answers if a["id"] == key), None)
        per_condition[meta["name"]] = {
            "answer": None if answer is None else answer["answer"],
            "error": None if answer is None else answer.get("error"),
            "words": None if answer is None else answer["length_words"],
            "score": answer_mean.get(key),
            "scores": {
                s["aspect"]: (s["value"], s["rationale"], s["error"])
                for s in by_answer.get(key, [])
            },
        }
    return QueryDetail(
        query_id=query["id"],
        query=query["query"],
        harmful=bool(query.get("harmful")),
        answers=per_condition,
        outcomes=outcomes_by_query.get(query["id"], {}),
    )
