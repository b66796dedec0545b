"""Judge one answer on the selected aspects; shared by evaluation (stage B) and stage A."""

from __future__ import annotations

from drpo.backends.errors import StructuredOutputError
from drpo.nodes.context import RunContext
from drpo.prompts.judge import JUDGE_ANSWER, fence, format_aspects, judgement_schema
from drpo.state.types import Aspect, AspectScore, Judgement


async def judge_answer(
    ctx: RunContext, query: str, answer: str, aspects: tuple[Aspect, ...], tag: str
) -> Judgement:
    """Score `answer`; an unusable judge reply yields missing scores with the error, never 0."""
    schema = judgement_schema(aspects)
    system, user = JUDGE_ANSWER.render(
        aspects=format_aspects(aspects), query=fence(query), answer=fence(answer)
    )
    try:
        reply = (await ctx.models["judge"].structured(system, user, schema, tag=tag))[0]
    except StructuredOutputError as exc:
        return Judgement(scores=tuple(AspectScore(aspect=a.name) for a in aspects), error=str(exc))
    verdicts = reply.model_dump()["scores"]
    return Judgement(
        scores=tuple(
            AspectScore(
                aspect=a.name,
                score=verdicts[a.name]["score"],
                rationale=verdicts[a.name]["rationale"],
            )
            for a in aspects
        )
    )


def critique_text(judgement: Judgement) -> str:
    """The judge's verdict as the optimizer reads it, weakest aspects first."""
    if not judgement.scores:
        return "(no critique available)"
    ordered = sorted(judgement.scores, key=lambda s: (s.score is None, s.score or 0))
    lines = [
        f"- {s.aspect}: {'missing' if s.score is None else f'{s.score}/5'}. {s.rationale}".rstrip()
        for s in ordered
    ]
    return "\n".join(lines)


def all_perfect(judgement: Judgement) -> bool:
    """Whether a judgement scored every aspect 5."""
    return bool(judgement.scores) and all(s.score == 5 for s in judgement.scores)
