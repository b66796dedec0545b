"""Judge one answer on the selected aspects; shared by evaluation (stage B), stage A and
`drpo judge-check`.

Where the endpoint returns token logprobs, each aspect also gets its probability-weighted score
(the expected value over the 1–5 score tokens, read at the score's position in the JSON reply).
A reply without usable logprobs keeps its integer scores; the run warns once and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraph.config import get_stream_writer

from drpo.backends.errors import StructuredOutputError
from drpo.backends.llm import RoleClient
from drpo.backends.logprobs import (
    LogprobError,
    TokenLogprobs,
    expected_digit,
    field_value_offset,
    reply_bytes,
)
from drpo.nodes.context import RunContext
from drpo.prompts.judge import addresses_the_grader, fence, judge_messages, judgement_schema
from drpo.state.types import Aspect, AspectScore, Judgement

# Alternatives asked for at each token: enough to hold all five digits (OpenAI allows 20).
TOP_LOGPROBS = 10
SCORE_DIGITS = range(1, 6)
GRADER_ADDRESS_RATIONALE = (
    "The answer addresses its evaluator (asks for a score, or imitates a grader or system "
    "message) instead of the user."
)


@dataclass(frozen=True)
class ScoredJudgement:
    """A judgement and, when it has integer scores only, why the probability scores are missing."""

    judgement: Judgement
    fallback: str | None = None


async def score_answer(
    judge: RoleClient,
    query: str,
    answer: str,
    aspects: tuple[Aspect, ...],
    tag: str,
    reference: str | None = None,
) -> ScoredJudgement:
    """Score `answer`; an unusable judge reply yields missing scores with the error, never 0.

    With a `reference` the judge grades against it; with no aspects (a metric-only run) there
    is nothing to ask and no call is made.
    """
    if not aspects:
        return ScoredJudgement(Judgement())
    if addresses_the_grader(answer):
        return ScoredJudgement(grader_addressed(aspects))
    schema = judgement_schema(aspects)
    fenced_reference = None if reference is None else fence(reference)
    system, user = judge_messages(aspects, fence(query), fence(answer), fenced_reference)
    top = TOP_LOGPROBS if judge.gives_logprobs else 0
    try:
        reply = await judge.structured_with_logprobs(
            system, user, schema, top_logprobs=top, tag=tag
        )
    except StructuredOutputError as exc:
        missing = tuple(AspectScore(aspect=a.name, weight=a.weight) for a in aspects)
        return ScoredJudgement(Judgement(scores=missing, error=str(exc)))
    verdicts = reply.value.model_dump()["scores"]
    integers = {a.name: verdicts[a.name]["score"] for a in aspects}
    expected: dict[str, float] = {}
    fallback = None
    if top:
        try:
            expected = expected_scores(reply.logprobs, integers)
        except LogprobError as exc:
            fallback = str(exc)
    scores = tuple(
        AspectScore(
            aspect=a.name,
            score=integers[a.name],
            rationale=verdicts[a.name]["rationale"],
            expected=expected.get(a.name),
            weight=a.weight,
        )
        for a in aspects
    )
    return ScoredJudgement(Judgement(scores=scores), fallback)


def grader_addressed(aspects: tuple[Aspect, ...]) -> Judgement:
    """1 on every aspect, decided in code: the answer tried to talk to its grader.

    The expected score is 1 as well, so the probability-mode reward agrees with the integer one.
    """
    scores = tuple(
        AspectScore(
            aspect=a.name,
            score=1,
            rationale=GRADER_ADDRESS_RATIONALE,
            expected=1.0,
            weight=a.weight,
        )
        for a in aspects
    )
    return Judgement(scores=scores)


def expected_scores(logprobs: TokenLogprobs | None, integers: dict[str, int]) -> dict[str, float]:
    """Each aspect's expected score from the reply's token logprobs.

    Raises LogprobError when the logprobs are missing or do not fit the reply: the digit found
    at an aspect's score position must be the integer score the parsed reply holds.
    """
    if logprobs is None:
        raise LogprobError("the endpoint returned no token logprobs")
    reply, spans = reply_bytes(logprobs)
    expected: dict[str, float] = {}
    for aspect, integer in integers.items():
        offset = field_value_offset(reply, aspect, "score")
        if reply[offset : offset + 1] != str(integer).encode():
            raise LogprobError(f"the logprobs do not spell {aspect}'s score {integer}")
        expected[aspect] = expected_digit(logprobs, spans, offset, SCORE_DIGITS)
    return expected


async def judge_answer(
    ctx: RunContext,
    query: str,
    answer: str,
    aspects: tuple[Aspect, ...],
    tag: str,
    reference: str | None = None,
) -> Judgement:
    """Score `answer` with the run's judge, warning once when logprobs are not usable."""
    scored = await score_answer(ctx.models["judge"], query, answer, aspects, tag, reference)
    if scored.fallback is not None and not ctx.warned_integer_scores:
        ctx.warned_integer_scores = True
        _warn(
            f"judge scores are integers, not probability-weighted ({scored.fallback}); "
            "the run keeps going with integer rewards where logprobs are missing"
        )
    return scored.judgement


def _warn(message: str) -> None:
    try:
        write = get_stream_writer()
    except RuntimeError:  # called outside a graph run (a benchmark): nothing to tell
        return
    write({"event": "warning", "message": message})


def critique_text(judgement: Judgement) -> str:
    """The judge's verdict as the optimizer reads it, weakest aspects first, then the metric's."""
    metric = judgement.metric
    if not judgement.scores and metric is None:
        return "(no critique available)"
    ordered = sorted(judgement.scores, key=lambda s: (s.score is None, s.score or 0))
    lines = [
        f"- {s.aspect}: {'missing' if s.score is None else f'{s.score}/5'}. {s.rationale}".rstrip()
        for s in ordered
    ]
    if metric is not None and metric.score is not None:
        # The metric's reason is feedback like a judge's rationale.
        lines.append(f"- Metric {metric.name}: {metric.score:.2f} of 1. {metric.reason}".rstrip())
    return "\n".join(lines)


def all_perfect(judgement: Judgement) -> bool:
    """Whether a judgement scored every aspect 5 (and its metric, if any, 1)."""
    metric = judgement.metric
    metric_perfect = metric is None or metric.score == 1.0
    has_scores = bool(judgement.scores) or (metric is not None and metric.score is not None)
    return has_scores and metric_perfect and all(s.score == 5 for s in judgement.scores)
