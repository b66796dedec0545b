"""Judge one answer on the selected aspects; shared by evaluation (stage B) and stage A."""

from __future__ import annotations

from drpo.backends.errors import StructuredOutputError
from drpo.nodes.context import RunContext
from drpo.prompts.judge import fence, judge_messages, judgement_schema
from drpo.state.types import Aspect, AspectScore, Judgement


async def judge_answer(
    ctx: RunContext,
    query: str,
    answer: str,
    aspects: tuple[Aspect, ...],
    tag: str,
    reference: str | None = None,
) -> Judgement:
    """Score `answer`; an unusable judge reply yields missing scores with the error, never 0.

    With a `reference` the judge grades against it; with no aspects (a metric-only run) there
    is nothing to ask and no call is made.
    """
    if not aspects:
        return Judgement()
    schema = judgement_schema(aspects)
    fenced_reference = None if reference is None else fence(reference)
    system, user = judge_messages(aspects, fence(query), fence(answer), fenced_reference)
    try:
        reply = (await ctx.models["judge"].structured(system, user, schema, tag=tag))[0]
    except StructuredOutputError as exc:
        return Judgement(
            scores=tuple(AspectScore(aspect=a.name, weight=a.weight) for a in aspects),
            error=str(exc),
        )
    verdicts = reply.model_dump()["scores"]
    return Judgement(
        scores=tuple(
            AspectScore(
                aspect=a.name,
                score=verdicts[a.name]["score"],
                rationale=verdicts[a.name]["rationale"],
                weight=a.weight,
            )
            for a in aspects
        )
    )


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
