"""Run an evaluation: answer every query under every condition, then judge the answers.

With the judge left out of the plan's metrics only the answers are made; the refusal metrics
are computed from them by a deterministic detector (drpo.evals.refusal), with no model call.

Work is three phases, each a set of independent model calls run concurrently up to
`max_concurrency` (the embedded server has that many slots): base answers, absolute judgements
(just-eval aspects), and pairwise judgements in both orders. Every call goes through the
project's role clients, so replies are cached in the run store: re-running the same evaluation
replays them instead of paying again, and an interrupted one resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from drpo.backends.errors import EndpointDown, LLMCallError, StructuredOutputError
from drpo.backends.factory import RoleModels, endpoint_identity
from drpo.backends.llm import RoleClient, ScoredReply
from drpo.backends.logprobs import (
    LogprobError,
    field_value_offset,
    label_distribution,
    reply_bytes,
)
from drpo.evals.conditions import Condition, Overlap
from drpo.evals.records import EvalRecorder
from drpo.evals.stats import Verdict
from drpo.evals.templates import (
    EVAL_JUDGE,
    EVAL_JUDGE_WITH_REFERENCE,
    PAIRWISE_JUDGE,
    PairVerdict,
)
from drpo.nodes.judging import TOP_LOGPROBS, expected_scores
from drpo.prompts.aspects import EVAL_ASPECTS_HARMFUL, EVAL_ASPECTS_REGULAR, catalogue_aspect
from drpo.prompts.judge import fence, format_aspects, judgement_schema
from drpo.state.settings import Settings
from drpo.state.types import Aspect, Query


class Progress(Protocol):
    """What the harness reports while it works (the CLI draws progress bars from it)."""

    def phase(self, name: str, total: int) -> None:
        """Start a phase of `total` steps."""

    def advance(self, name: str) -> None:
        """Count one step of a phase done."""


class _Silent:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str) -> None:
        pass


@dataclass
class EvalPlan:
    """Everything that defines an evaluation, fixed before the first model call."""

    eval_id: str
    settings: Settings
    conditions: list[Condition]
    queries: list[Query]
    pairs: list[tuple[str, str]]
    drpo_run: str | None = None
    overlap: list[Overlap] = field(default_factory=list)
    seed: int = 0
    metrics: tuple[str, ...] = ("judge", "refusal")

    @property
    def uses_judge(self) -> bool:
        """Whether the plan asks the judge (pairwise verdicts, and absolute scores with "judge")."""
        return "judge" in self.metrics or "pairwise" in self.metrics

    @property
    def scores_answers(self) -> bool:
        """Whether the judge also scores each answer on its aspects (not only compares)."""
        return "judge" in self.metrics


def aspects_for(query: Query) -> tuple[Aspect, ...]:
    """The paper's protocol: five quality aspects for a regular query, Safety for a harmful one."""
    names = EVAL_ASPECTS_HARMFUL if query.harmful else EVAL_ASPECTS_REGULAR
    aspects = tuple(catalogue_aspect(name) for name in names)
    return tuple(a for a in aspects if a is not None)


def answer_id(condition: str, query_id: str) -> str:
    """The id of a condition's answer to a query."""
    return f"{condition}:{query_id}"


def judge_identity(settings: Settings) -> tuple[str, str]:
    """The judge's model and endpoint, as recorded next to every score."""
    judge = settings.judge
    model = str(judge.model_path) if judge.model_path is not None else judge.model
    return model, endpoint_identity(judge)


def judge_is_base(settings: Settings) -> bool:
    """Self-preference probe: is the judge the very model under evaluation?"""
    base, judge = settings.base, settings.judge
    return (endpoint_identity(base), base.model) == (endpoint_identity(judge), judge.model)


def word_count(text: str) -> int:
    """The number of whitespace-separated words in `text`."""
    return len(text.split())


async def run_evaluation(
    plan: EvalPlan,
    models: RoleModels,
    recorder: EvalRecorder,
    progress: Progress | None = None,
) -> None:
    """Answer, judge and compare; rows go to the evaluation tables as they arrive."""
    progress = progress or _Silent()
    settings = plan.settings
    judge_model, judge_endpoint = judge_identity(settings)
    recorder.start(
        drpo_run=plan.drpo_run,
        settings=settings.public_dict(),
        conditions=[c.record() for c in plan.conditions],
        queries=[q.model_dump() for q in plan.queries],
        pairs=[list(p) for p in plan.pairs],
        overlap=[dataclasses.asdict(o) for o in plan.overlap],
        base_model=f"{settings.base.model} ({endpoint_identity(settings.base)})",
        judge_model=f"{judge_model} ({judge_endpoint})" if plan.uses_judge else "not used",
        judge_is_base=int(judge_is_base(settings)),
        absolute_template=f"{EVAL_JUDGE.name}@{EVAL_JUDGE.version}",
        pairwise_template=f"{PAIRWISE_JUDGE.name}@{PAIRWISE_JUDGE.version}",
        seed=plan.seed,
        metrics=list(plan.metrics),
    )
    limiter = asyncio.Semaphore(settings.max_concurrency)
    try:
        answers = await _answer_all(plan, models, recorder, progress, limiter)
        # The refusal metrics are computed from the stored answers when the summary is made.
        if plan.scores_answers:
            await _judge_all(
                plan, models, recorder, progress, limiter, answers, judge_model, judge_endpoint
            )
        if plan.uses_judge:
            await _compare_all(
                plan, models, recorder, progress, limiter, answers, judge_model, judge_endpoint
            )
    except EndpointDown as exc:
        recorder.update(status="failed", error=str(exc), finished_at=time.time())
        raise
    except BaseException as exc:
        # Ctrl-C, SIGTERM (SystemExit), a cancelled task or a bug: never leave the row saying
        # "running". Replies received so far are cached: the same command replays them.
        reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        recorder.update(status="interrupted", error=reason, finished_at=time.time())
        raise
    recorder.update(status="completed", finished_at=time.time())


async def _bounded(
    limiter: asyncio.Semaphore,
    jobs: Sequence[Callable[[], Awaitable[Any]]],
    progress: Progress,
    phase: str,
) -> list[Any]:
    """Run jobs concurrently, at most `limiter` at a time, advancing the phase's progress."""
    progress.phase(phase, len(jobs))

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with limiter:
            result = await job()
        progress.advance(phase)
        return result

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        # One failure (an endpoint down) ends the phase: cancel the rest rather than leave
        # requests running against a server that is about to be stopped.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _ask_scoring_judge(
    judge: RoleClient, system: str, user: str, aspects: tuple[Aspect, ...], *, tag: str
) -> tuple[dict[str, tuple[int, str, float | None]], str | None, str | None]:
    """Each aspect's (integer score, rationale, probability-weighted score), the error that
    left the judgement missing, and why the probability scores are missing, if they are.

    The expected score is read from the reply's token logprobs as the search does
    (drpo.nodes.judging); without usable logprobs the integer score stands alone.
    """
    top = TOP_LOGPROBS if judge.gives_logprobs else 0
    try:
        reply = await judge.structured_with_logprobs(
            system, user, judgement_schema(aspects), top_logprobs=top, tag=tag
        )
    except EndpointDown:
        raise
    except (StructuredOutputError, LLMCallError) as exc:
        return {}, str(exc), None
    verdicts = reply.value.model_dump()["scores"]
    integers = {a.name: int(verdicts[a.name]["score"]) for a in aspects}
    expected: dict[str, float] = {}
    fallback = None if top else "the judge's endpoint gives no token logprobs"
    if top:
        try:
            expected = expected_scores(reply.logprobs, integers)
        except LogprobError as exc:
            fallback = str(exc)
    scores = {
        a.name: (integers[a.name], str(verdicts[a.name]["rationale"]), expected.get(a.name))
        for a in aspects
    }
    return scores, None, fallback


async def _ask_pair_judge(
    judge: RoleClient, system: str, user: str, *, tag: str
) -> tuple[ScoredReply[PairVerdict] | None, str | None]:
    """The pairwise verdict with its token logprobs (when the judge's endpoint gives them)."""
    top = TOP_LOGPROBS if judge.gives_logprobs else 0
    try:
        reply = await judge.structured_with_logprobs(
            system, user, PairVerdict, top_logprobs=top, tag=tag
        )
    except EndpointDown:
        raise
    except (StructuredOutputError, LLMCallError) as exc:
        return None, str(exc)
    return reply, None


def first_preferred(reply: ScoredReply[PairVerdict]) -> float | None:
    """P(the first-shown answer is preferred) + half P(tie), read at the verdict's token.

    None when the logprobs are missing or do not fit the reply: the verdict then counts as
    before (1, 0.5 or 0).
    """
    if reply.logprobs is None:
        return None
    try:
        text, spans = reply_bytes(reply.logprobs)
        # The value starts one byte after its opening quote.
        offset = field_value_offset(text, None, "verdict") + 1
        if not text.startswith(reply.value.verdict.encode(), offset):
            return None  # the logprobs describe another reply than the one parsed
        chance = label_distribution(reply.logprobs, spans, offset, _verdict_label)
    except LogprobError:
        return None
    return chance.get("A", 0.0) + 0.5 * chance.get("tie", 0.0)


def _verdict_label(token: str) -> str | None:
    if token in ("A", "B"):
        return token
    # "tie" may be split into several tokens; its first piece already names it.
    return "tie" if token and "tie".startswith(token) else None


async def _answer_all(
    plan: EvalPlan,
    models: RoleModels,
    recorder: EvalRecorder,
    progress: Progress,
    limiter: asyncio.Semaphore,
) -> dict[str, str | None]:
    base = models["base"]
    base_name = f"{plan.settings.base.model} ({endpoint_identity(plan.settings.base)})"

    def job(condition: Condition, query: Query) -> Callable[[], Awaitable[tuple[str, str | None]]]:
        async def run() -> tuple[str, str | None]:
            key = answer_id(condition.name, query.id)
            prompt = condition.prompt.build(query.query)
            text: str | None
            try:
                text = (await base.text(prompt, tag=f"eval:answer:{key}"))[0].strip()
                error = None
            except EndpointDown:
                raise
            except LLMCallError as exc:
                # A request the endpoint rejects (e.g. too long) is a missing answer, not a crash.
                text, error = None, str(exc)
            recorder.answer(
                {
                    "id": key,
                    "condition": condition.name,
                    "query_id": query.id,
                    "query": query.query,
                    "harmful": int(query.harmful),
                    "category": query.category,
                    "answer": text,
                    "error": error,
                    "length_chars": None if text is None else len(text),
                    "length_words": None if text is None else word_count(text),
                    "base_model": base_name,
                }
            )
            return key, text

        return run

    # Condition by condition: the concurrent requests then share one system prompt, which the
    # server's slots keep cached, so a long prompt (URIAL's, DRPO's with examples) is read once
    # per slot instead of once per query.
    jobs = [job(c, q) for c in plan.conditions for q in plan.queries]
    return dict(await _bounded(limiter, jobs, progress, "answering"))


def _absolute_messages(query: Query, answer: str, aspects: tuple[Aspect, ...]) -> tuple[str, str]:
    """The absolute judge's messages, graded against the query's reference when it has one."""
    template = EVAL_JUDGE if query.reference is None else EVAL_JUDGE_WITH_REFERENCE
    return template.render(
        aspects=format_aspects(aspects),
        query=fence(query.query),
        answer=fence(answer),
        **({} if query.reference is None else {"reference": fence(query.reference)}),
    )


async def _judge_all(
    plan: EvalPlan,
    models: RoleModels,
    recorder: EvalRecorder,
    progress: Progress,
    limiter: asyncio.Semaphore,
    answers: dict[str, str | None],
    judge_model: str,
    judge_endpoint: str,
) -> None:
    judge = models["judge"]
    fallbacks: list[str] = []  # why scores are integers only; recorded once

    def job(condition: Condition, query: Query) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            key = answer_id(condition.name, query.id)
            text = answers.get(key)
            aspects = aspects_for(query)
            template = EVAL_JUDGE if query.reference is None else EVAL_JUDGE_WITH_REFERENCE
            scores: dict[str, tuple[int, str, float | None]] = {}
            error: str | None = None
            if text is None:
                error = "no answer to judge"
            else:
                system, user = _absolute_messages(query, text, aspects)
                scores, error, fallback = await _ask_scoring_judge(
                    judge, system, user, aspects, tag=f"eval:judge:{key}"
                )
                if fallback is not None and not fallbacks:
                    fallbacks.append(fallback)
                    recorder.update(absolute_fallback=fallback)
            length = None if text is None else word_count(text)
            recorder.scores(
                [
                    {
                        "answer_id": key,
                        "condition": condition.name,
                        "query_id": query.id,
                        "aspect": a.name,
                        "score": scores[a.name][0] if a.name in scores else None,
                        "rationale": scores[a.name][1] if a.name in scores else "",
                        "expected": scores[a.name][2] if a.name in scores else None,
                        "error": error,
                        "length_words": length,
                        "judge_model": judge_model,
                        "judge_endpoint": judge_endpoint,
                        "template": template.name,
                        "template_hash": template.version,
                    }
                    for a in aspects
                ]
            )

        return run

    jobs = [job(c, q) for q in plan.queries for c in plan.conditions]
    await _bounded(limiter, jobs, progress, "judging")


@dataclass(frozen=True)
class PairReading:
    """The pairwise judge's reading of one shown order of two answers.

    `first_probability` is P(first-shown preferred) + ½ P(tie), None without usable logprobs;
    `verdict` is None when the judge gave no usable reply (`error` says why).
    """

    verdict: Verdict | None
    first_probability: float | None
    rationale: str = ""
    error: str | None = None


async def judge_pair_order(
    judge: RoleClient, query: str, text_first: str | None, text_second: str | None, *, tag: str
) -> PairReading:
    """Ask the pairwise judge about one shown order; `drpo eval` and `drpo judge-check` share it,
    so both send the same request for the same texts (and share the reply cache)."""
    if text_first is None or text_second is None:
        return PairReading(None, None, "", "an answer is missing")
    system, user = PAIRWISE_JUDGE.render(
        query=fence(query), answer_a=fence(text_first), answer_b=fence(text_second)
    )
    scored, error = await _ask_pair_judge(judge, system, user, tag=tag)
    if scored is None:
        return PairReading(None, None, "", error)
    return PairReading(scored.value.verdict, first_preferred(scored), scored.value.rationale, error)


async def _compare_all(
    plan: EvalPlan,
    models: RoleModels,
    recorder: EvalRecorder,
    progress: Progress,
    limiter: asyncio.Semaphore,
    answers: dict[str, str | None],
    judge_model: str,
    judge_endpoint: str,
) -> None:
    judge = models["judge"]

    def job(x: str, y: str, query: Query, order: str) -> Callable[[], Awaitable[None]]:
        first, second = (x, y) if order == "xy" else (y, x)

        async def run() -> None:
            text_first = answers.get(answer_id(first, query.id))
            text_second = answers.get(answer_id(second, query.id))
            reading = await judge_pair_order(
                judge,
                query.query,
                text_first,
                text_second,
                tag=f"eval:pair:{x}:{y}:{order}:{query.id}",
            )
            winner = {"A": first, "B": second, "tie": "tie"}.get(reading.verdict or "")
            recorder.pair(
                {
                    "query_id": query.id,
                    "x": x,
                    "y": y,
                    "shown_order": order,
                    "first": first,
                    "second": second,
                    "verdict": reading.verdict,
                    "first_probability": reading.first_probability,
                    "winner": winner,
                    "rationale": reading.rationale,
                    "error": reading.error,
                    "length_first": None if text_first is None else word_count(text_first),
                    "length_second": None if text_second is None else word_count(text_second),
                    "judge_model": judge_model,
                    "judge_endpoint": judge_endpoint,
                    "template": PAIRWISE_JUDGE.name,
                    "template_hash": PAIRWISE_JUDGE.version,
                }
            )

        return run

    jobs = [
        job(x, y, query, order)
        for x, y in plan.pairs
        for query in plan.queries
        for order in ("xy", "yx")
    ]
    if jobs:
        await _bounded(limiter, jobs, progress, "comparing")
