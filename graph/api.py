"""The Python API: `optimize(settings)`, `resume(run_id)`, and the compiled graph for streaming.

A run is a LangGraph thread (`thread_id` = run id) checkpointed to SQLite after every step
(`durability="sync"`), plus a row and its history in the run store. A run that stops early — a
model endpoint down, Ctrl-C, a kill — resumes from its last checkpoint; every reply it already
received is replayed from the run store instead of being paid for again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import ValidationError

from drpo.backends.embeddings import EmbeddingTable, embed_in_child
from drpo.backends.errors import EndpointRefused, LLMCallError
from drpo.backends.factory import build_role_models
from drpo.backends.llm import CachedReply, CallRecord
from drpo.backends.preflight import check_settings
from drpo.backends.retrieval import build_retriever, resolve_kind
from drpo.backends.speed_probe import ProbeFailed, ServerSpeed, measure_server_speed
from drpo.checkpoints.saver import open_run_checkpointer
from drpo.checkpoints.store import RunLedger, RunStore, new_run_id
from drpo.data.loaders import (
    DataFileError,
    load_examples,
    load_queries,
    seed_examples,
    train_queries,
    validation_queries,
)
from drpo.graph.builder import build_graph
from drpo.nodes.adapt import fit_to_speed, slowest, why_not_adapted
from drpo.nodes.budget import BudgetGate, BudgetReached
from drpo.nodes.context import RetrieverFactory, RunContext, RunData
from drpo.nodes.metric import Metric, import_metric, import_path_of, metric_name
from drpo.nodes.policy import level_batch, schedule
from drpo.nodes.prepare import seeded_order, stratified_order
from drpo.prompts.rubric import BUILTIN_RUBRIC, Rubric, load_rubric, parse_rubric
from drpo.state.events import (
    BeamEntry,
    CallFinished,
    CallStarted,
    LevelDone,
    ProposalRejected,
    ReviewNeeded,
    RunEvent,
    RunFinished,
    RunStarted,
    RunWarning,
    ServerStarted,
    SpeedMeasured,
    StepFinished,
)
from drpo.state.settings import (
    DEFAULT_STORE,
    ROLES,
    ConfigError,
    RoleSettings,
    Settings,
    deep_merge,
    format_validation_error,
    settings_from_stored,
)
from drpo.state.types import Candidate, Example, ReviewRequest, RunResult

if TYPE_CHECKING:
    from drpo.backends.embedded import EmbeddedServerPool

EventHandler = Callable[[RunEvent], None]
RECURSION_LIMIT = 100_000
WAITING = "waiting for a review decision"


class RunError(RuntimeError):
    """A run could not start or continue; the message is one line for the user."""


class RunPaused(RunError):
    """The run stopped before finishing and can be resumed with `drpo resume`."""

    def __init__(self, run_id: str, reason: str, resume_flags: str = "") -> None:
        command = f"drpo resume {run_id}{resume_flags}"
        super().__init__(f"run {run_id} paused: {reason} (resume with: {command})")
        self.run_id = run_id
        self.reason = reason


def load_run_data(settings: Settings) -> RunData:
    """Load the run's examples and queries (the shipped seed data unless files are given)."""
    data = settings.data
    train = load_queries(data.train) if data.train else train_queries()
    validation = load_queries(data.validation) if data.validation else validation_queries()
    examples = load_examples(data.examples) if data.examples else seed_examples()
    if data.train_limit is not None:
        train = train[: data.train_limit]
    if not train:
        source = str(data.train) if data.train else "the shipped training set"
        raise DataFileError("the training set is empty", source=source)
    overlap = {q.query.strip() for q in train} & {q.query.strip() for q in validation}
    if overlap:
        validation = [q for q in validation if q.query.strip() not in overlap]
    validation = stratified_order(validation, settings.seed)
    return RunData(train=train, validation=validation, examples=examples)


def texts_to_embed(settings: Settings, data: RunData) -> tuple[list[str], list[str]]:
    """Every text a search can embed: the examples' queries and the queries it can reach."""
    plan = schedule(settings, len(data.examples), len(data.validation))
    order = seeded_order([q.id for q in data.train], settings.seed)
    reachable = [
        q.query
        for level in range(plan.max_levels)
        for q in level_batch(order, data.train, level, plan.queries_per_level)
    ]
    validation = [q.query for q in data.validation[: plan.validation_size]]
    return [e.query for e in data.examples], [*reachable, *validation]


def _uses_embedded(settings: Settings) -> bool:
    return any(settings.role(role).is_embedded for role in ROLES)


def with_metric(settings: Settings, metric: Metric | None) -> tuple[Settings, Metric | None]:
    """The settings recording how to get the metric back, and the metric to score with.

    A callable given from Python is stored by import path when it has one; otherwise only its
    name is stored, and a resume must be handed the callable again.
    """
    rewards = settings.rewards
    if metric is not None:
        path = import_path_of(metric)
        update = {"metric": path, "metric_callable": None if path else metric_name(metric)}
    elif rewards.metric is not None:
        metric = import_metric(rewards.metric)
        update = {}
    else:
        update = {}
    if not rewards.llm_aspects and metric is None:
        raise ConfigError("rewards.llm_aspects = false needs a metric (--metric module:function)")
    if update:
        settings = settings_from_stored(
            {**settings.public_dict(), "rewards": {**rewards.model_dump(mode="json"), **update}}
        ).with_chosen(settings.chosen)
    return settings, metric


def run_rubric(settings: Settings) -> Rubric:
    """The rubric a new run is judged by: its rubric file's, or the built-in catalogue."""
    path = settings.rewards.rubric
    return BUILTIN_RUBRIC if path is None else load_rubric(path)


def stored_rubric(row: dict[str, Any]) -> Rubric:
    """The rubric stored with a run (the file may have changed since); old runs: built-in."""
    text = row.get("rubric")
    return BUILTIN_RUBRIC if not text else parse_rubric(json.loads(text), f"of run {row['id']}")


def stored_metric(settings: Settings, run_id: str, metric: Metric | None) -> Metric | None:
    """The metric a run was started with, imported again; a bare callable must be given again."""
    rewards = settings.rewards
    if metric is not None:
        return metric
    if rewards.metric is not None:
        return import_metric(rewards.metric)
    if rewards.metric_callable is not None:
        name = rewards.metric_callable
        raise RunError(
            f"run {run_id} was scored with the Python callable {name!r}, which has no import "
            f"path: continue it from Python with resume({run_id!r}, metric={name})"
        )
    return None


def call_event(record: CallRecord) -> CallFinished:
    return CallFinished(
        role=record.role,
        model=record.model,
        endpoint=record.endpoint,
        outcome=record.outcome,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cached_tokens=record.cached_tokens,
        seconds=record.latency,
        stage=record.stage,
        level=record.level,
    )


def server_choices(pool: EmbeddedServerPool, pinned: bool) -> list[RunEvent]:
    """What each embedded server was started with (threads, slots) and why."""
    return [
        ServerStarted(
            model=path.name,
            threads=server.threads,
            slots=server.slots,
            pinned=pinned,
            reason=server.threads_reason,
        )
        for path, server in pool.servers.items()
    ]


def measure_speed(pool: EmbeddedServerPool) -> list[RunEvent]:
    """Time each embedded server once, before the search loads it; a failure is one warning."""
    events: list[RunEvent] = []
    for path, server in pool.servers.items():
        try:
            speed = measure_server_speed(server.root_url)
        except ProbeFailed as exc:
            events.append(RunWarning(message=f"no time estimate: {exc}"))
            continue
        events.append(
            SpeedMeasured(
                model=path.name,
                prefill_per_second=speed.prefill_per_second,
                decode_per_second=speed.decode_per_second,
            )
        )
    return events


def adapt_to_speed(
    settings: Settings,
    data: RunData,
    rubric: Rubric,
    measured: list[RunEvent],
    store: RunStore,
    run_id: str,
) -> tuple[Settings, list[RunEvent]]:
    """The settings a new run goes with: the default search cut to the time target at the
    measured speed (stored with the run, with its `SettingsAdapted` event), else as given.

    Nothing is cut when the user chose the search (`why_not_adapted`) or a probe failed.
    """
    speeds = [
        ServerSpeed(event.prefill_per_second, event.decode_per_second)
        for event in measured
        if isinstance(event, SpeedMeasured)
    ]
    if not speeds or len(speeds) < len(measured) or why_not_adapted(settings) is not None:
        return settings, []
    adaptation = fit_to_speed(settings, data, slowest(speeds), rubric)
    if not adaptation.changes:
        return settings, []
    event = adaptation.event()
    store.update_run(
        run_id,
        settings=json.dumps(adaptation.settings.public_dict()),
        adapted=event.model_dump_json(),
    )
    return adaptation.settings, [event]


class _ObservedLedger(RunLedger):
    """The run ledger that also reports each request sent and each call recorded as events.

    It stays one object as cache and sink, so a paid call and its reply keep being written in
    one transaction; the event follows the write.
    """

    def __init__(self, store: RunStore, run_id: str, on_event: EventHandler) -> None:
        super().__init__(store, run_id)
        self.on_event = on_event

    def record_call(self, record: CallRecord) -> None:
        super().record_call(record)
        self.on_event(call_event(record))

    def call_started(self, role: str, endpoint: str) -> None:
        self.on_event(CallStarted(role=role, endpoint=endpoint))

    def put(self, key: str, reply: CachedReply, record: CallRecord | None = None) -> None:
        super().put(key, reply, record)
        if record is not None:
            self.on_event(call_event(record))

    def record_rejected(self, candidate: Candidate, level: int, reason: str) -> None:
        super().record_rejected(candidate, level, reason)
        self.on_event(
            ProposalRejected(
                candidate_id=candidate.id,
                parent_id=candidate.parent_id or "",
                level=level,
                reason=reason,
            )
        )


@asynccontextmanager
async def open_run(
    settings: Settings,
    run_id: str,
    store: RunStore,
    on_event: EventHandler | None = None,
    metric: Metric | None = None,
    adapt: bool = False,
) -> AsyncIterator[
    tuple[CompiledStateGraph[Any, Any, Any, Any], RunContext, BaseCheckpointSaver[Any]]
]:
    """Everything a run needs while it executes: graph, context, checkpointer, model servers.

    `adapt`: a new run, whose default search may be cut to the speed measured here.
    """
    data = load_run_data(settings)
    row = store.run(run_id) or {"id": run_id}
    rubric = stored_rubric(row)
    metric = stored_metric(settings, run_id, metric)
    async with AsyncExitStack() as stack:
        pool = None
        if _uses_embedded(settings):
            from drpo.backends.embedded import EmbeddedServerPool

            pool = EmbeddedServerPool.from_settings(settings)
            stack.callback(pool.close)
        ledger = (
            store.for_run(run_id) if on_event is None else _ObservedLedger(store, run_id, on_event)
        )
        models = await asyncio.to_thread(
            build_role_models, settings, pool=pool, cache=ledger, sink=ledger, run_id=run_id
        )
        stack.push_async_callback(models.aclose)
        if not rubric.is_builtin:
            for role in ("selector", "judge"):
                models[role].rubric_hash = rubric.hash
        if pool is not None and (on_event is not None or adapt):
            # Only search settings can change, which the role models built above do not hold.
            settings = await _probe(pool, settings, data, rubric, store, run_id, on_event, adapt)
        checkpointer = await stack.enter_async_context(open_run_checkpointer(settings))
        row = store.run(run_id) or {}
        retriever_for = await _retriever_factory(settings, data, row, ledger)
        budget = BudgetGate(
            settings.budget,
            spent=ledger.spent,
            active_before=row.get("active_seconds") or 0.0,
        )
        context = RunContext(
            budget=budget,
            run_id=run_id,
            settings=settings,
            models=models,
            ledger=ledger,
            retriever_for=retriever_for,
            train=data.train,
            validation=data.validation,
            seed_examples=data.examples,
            rubric=rubric,
            metric=metric,
        )
        yield build_graph(checkpointer), context, checkpointer


async def _probe(
    pool: EmbeddedServerPool,
    settings: Settings,
    data: RunData,
    rubric: Rubric,
    store: RunStore,
    run_id: str,
    on_event: EventHandler | None,
    adapt: bool,
) -> Settings:
    """Time the embedded servers, cut a new run's default search to fit if `adapt`, report
    both, and return the settings the run goes with."""
    # Probed in a worker thread, reported from the loop: handlers need not be thread-safe.
    events = server_choices(pool, settings.embedded_pin_slots)
    measured = await asyncio.to_thread(measure_speed, pool)
    if adapt:
        settings, adapted = adapt_to_speed(settings, data, rubric, measured, store, run_id)
        events += adapted
    if on_event is not None:
        for event in [*events, *measured]:
            on_event(event)
    return settings


async def _retriever_factory(
    settings: Settings, data: RunData, row: dict[str, Any], ledger: RunLedger
) -> RetrieverFactory:
    """How the run retrieves its examples: the kind it started with, embedded once if needed."""
    # A resumed run keeps the retrieval it started with, whatever this host would pick for
    # "auto"; the kind is stored so serve and eval retrieve exactly as the search did.
    retrieval = resolve_kind(row.get("retrieval") or settings.data.retrieval)
    if row and row.get("retrieval") != retrieval:
        ledger.update_run(retrieval=retrieval)
    table: EmbeddingTable | None = None
    if retrieval == "embeddings":
        table = await asyncio.to_thread(embed_in_child, *texts_to_embed(settings, data))

    def retriever_for(examples: list[Example]) -> Any:
        return build_retriever(examples, retrieval, table)

    return retriever_for


def run_config(settings: Settings, run_id: str) -> RunnableConfig:
    # max_concurrency must be top-level: inside "configurable" LangGraph ignores it.
    return {
        "configurable": {"thread_id": run_id},
        "max_concurrency": settings.max_concurrency,
        "recursion_limit": RECURSION_LIMIT,
    }


async def _drive(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    context: RunContext,
    run_input: dict[str, Any] | Command[Any] | None,
    store: RunStore,
    on_event: EventHandler | None,
) -> RunResult:
    run_id = context.run_id
    config = run_config(context.settings, run_id)
    store.update_run(run_id, status="running", error=None, pid=os.getpid())
    with _active_time(store, run_id):
        return await _stream(graph, context, run_input, store, on_event, config)


@contextmanager
def _active_time(store: RunStore, run_id: str) -> Iterator[None]:
    """Add the time this process spent driving the run to its `active_seconds`."""
    started = time.monotonic()
    try:
        yield
    finally:
        row = store.run(run_id) or {}
        total = (row.get("active_seconds") or 0.0) + time.monotonic() - started
        store.update_run(run_id, active_seconds=total)


async def _stream(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    context: RunContext,
    run_input: dict[str, Any] | Command[Any] | None,
    store: RunStore,
    on_event: EventHandler | None,
    config: RunnableConfig,
) -> RunResult:
    run_id = context.run_id
    try:
        async for mode, chunk in graph.astream(
            run_input,
            config=config,
            context=context,
            durability="sync",
            stream_mode=["updates", "custom"],
        ):
            if on_event is not None:
                # With several stream modes astream yields (mode, chunk) pairs, which its
                # annotations do not describe: a custom chunk is the event a node wrote.
                for event in _graph_events(mode, chunk):
                    on_event(event)
    except BudgetReached as exc:
        store.update_run(run_id, status="paused", error=str(exc))
        # Twice the spent budget as an example of a larger one.
        raise RunPaused(run_id, str(exc), f" {exc.flag} {int(exc.limit * 2)}") from None
    except LLMCallError as exc:
        store.update_run(run_id, status="paused", error=str(exc))
        fix = refusal_flags(context.settings, exc) if isinstance(exc, EndpointRefused) else ""
        raise RunPaused(run_id, str(exc), fix) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        store.update_run(run_id, status="paused", error="interrupted by the user")
        raise
    snapshot = await graph.aget_state(config)
    if snapshot.next:
        store.update_run(run_id, status="waiting")
        if on_event is not None:
            on_event(ReviewNeeded(run_id=run_id, request=_interrupt_request(snapshot.tasks)))
        raise RunPaused(run_id, WAITING)
    result = snapshot.values.get("result")
    if not isinstance(result, RunResult):
        store.update_run(run_id, status="failed", error="the graph ended without a result")
        raise RunError(f"run {run_id} ended without a result")
    if on_event is not None:
        on_event(RunFinished(result=result))
    return result


def _graph_events(mode: str, chunk: Any) -> Iterator[RunEvent]:
    """The typed events behind one item of the graph's stream."""
    if mode == "updates":
        for node in chunk:
            yield StepFinished(node=node)
    elif isinstance(chunk, dict) and chunk.get("event") == "level":
        yield LevelDone(
            level=chunk["level"],
            depth_limit=chunk["depth_limit"],
            children=chunk["children"],
            unscored=chunk["unscored"],
            beam=tuple(
                BeamEntry(candidate_id=cid, value=value, reward=reward)
                for cid, value, reward in chunk["beam"]
            ),
        )


def _interrupt_request(tasks: Any) -> ReviewRequest | None:
    for task in tasks:
        for pending in task.interrupts:
            value = pending.value
            return (
                value if isinstance(value, ReviewRequest) else ReviewRequest.model_validate(value)
            )
    return None


async def optimize_async(
    settings: Settings,
    *,
    run_id: str | None = None,
    on_event: EventHandler | None = None,
    metric: Metric | None = None,
) -> RunResult:
    """Run a whole optimization (stage A, then stage B, then the final pick).

    `metric(query, answer, reference)` scores answers in [0, 1] beside (or, with
    `rewards.llm_aspects = false`, instead of) the judge's aspects.
    """
    run_id = run_id or new_run_id()
    # Fail on bad data, rubric, metric or settings before anything is written.
    data = load_run_data(settings)
    rubric = run_rubric(settings)
    settings, metric = with_metric(settings, metric)
    warnings = await asyncio.to_thread(check_settings, settings)
    store = RunStore(settings.store)
    try:
        store.create_run(run_id, settings.public_dict(), [q.id for q in data.train])
        store.update_run(run_id, rubric=json.dumps(rubric.model_dump(mode="json")))
        store.claim_run(run_id)
        if on_event is not None:
            on_event(RunStarted(run_id=run_id, store=str(settings.store)))
            for warning in warnings:
                on_event(RunWarning(message=warning))
        try:
            run = open_run(settings, run_id, store, on_event, metric, adapt=True)
            async with run as (graph, context, _):
                return await _drive(graph, context, {"run_id": run_id}, store, on_event)
        except (KeyboardInterrupt, asyncio.CancelledError):
            store.update_run(run_id, status="paused", error="interrupted by the user")
            raise
    finally:
        store.release_run(run_id)
        store.close()


async def resume_async(
    run_id: str,
    *,
    store_path: Path = DEFAULT_STORE,
    on_event: EventHandler | None = None,
    budget: dict[str, Any] | None = None,
    endpoint_changes: dict[str, Any] | None = None,
    metric: Metric | None = None,
) -> RunResult:
    """Continue a run from its last checkpoint with the settings it was started with.

    `budget` replaces budget limits (e.g. {"calls": 500}) for this and later resumes;
    `endpoint_changes` (e.g. {"judge": {"structured_output": "json_object"}}) changes how a
    role's requests are shaped, after an endpoint refused them. `metric` is needed only when
    the run was started with a Python callable that has no import path.
    """
    if not Path(store_path).exists():
        raise RunError(f"run store not found: {store_path}")
    if endpoint_changes:
        check_request_shaping(endpoint_changes)
    store = RunStore(store_path)
    try:
        row = store.claim_run(run_id)  # refuses while another live process drives the run
        if row is None:
            raise RunError(f"no run {run_id!r} in {store_path}")
        if row["status"] == "completed":
            raise RunError(f"run {run_id} is already completed")
        if on_event is not None:
            on_event(RunStarted(run_id=run_id, store=str(store_path), resumed=True))
        settings = settings_from_stored(json.loads(row["settings"]))
        stored_metric(settings, run_id, metric)  # refuse before the budget is rewritten
        if budget:
            settings = raise_budget(settings, budget, store, row)
        if endpoint_changes:
            settings = change_request_shaping(settings, endpoint_changes, store, row["id"])
        async with open_run(settings, run_id, store, on_event, metric) as (graph, context, _):
            snapshot = await graph.aget_state(run_config(settings, run_id))
            run_input = None if snapshot.values else {"run_id": run_id}
            return await _drive(graph, context, run_input, store, on_event)
    finally:
        store.release_run(run_id)
        store.close()


def raise_budget(
    settings: Settings, budget: dict[str, Any], store: RunStore, row: dict[str, Any]
) -> Settings:
    """The stored settings with new budget limits, each above what the run has already spent."""
    merged = {**settings.budget.model_dump(), **budget}
    updated = settings_from_stored({**settings.public_dict(), "budget": merged})
    spent = {**store.spent(row["id"]), "wall_seconds": row.get("active_seconds") or 0.0}
    for name, limit in budget.items():
        if limit is not None and spent[name] >= limit:
            raise ConfigError(
                f"budget.{name} {limit:g} is already used up (the run has spent "
                f"{spent[name]:.0f}); give a larger one"
            )
    store.update_run(row["id"], settings=json.dumps(updated.public_dict()))
    return updated


async def astream_optimize(
    settings: Settings, *, run_id: str | None = None
) -> AsyncIterator[RunEvent]:
    """Run `optimize_async` and yield its typed events as they happen.

    The stream ends after `RunFinished`, or after `ReviewNeeded` when the run waits for a
    person (answer it with `decide_async`). Any other stop raises what `optimize_async` raises
    (`RunPaused` for a budget or an endpoint that is down), after the events before it.
    """
    events: asyncio.Queue[RunEvent] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def push(event: RunEvent) -> None:
        # A queue is not thread-safe: an event raised in a worker thread is handed to the loop.
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            events.put_nowait(event)
        else:
            loop.call_soon_threadsafe(events.put_nowait, event)

    run = asyncio.create_task(optimize_async(settings, run_id=run_id, on_event=push))
    try:
        while not run.done():
            waiter = asyncio.ensure_future(events.get())
            await asyncio.wait({waiter, run}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                yield waiter.result()
            else:
                waiter.cancel()
        while not events.empty():
            yield events.get_nowait()
        failure = run.exception()
        if isinstance(failure, RunPaused) and failure.reason == WAITING:
            return
        run.result()
    finally:
        if not run.done():  # the caller stopped iterating: stop the run, leaving it resumable
            run.cancel()
            with suppress(asyncio.CancelledError):
                await run


def refusal_flags(settings: Settings, exc: EndpointRefused) -> str:
    """`drpo resume` flags applying the refusal's fix to every role on the same endpoint.

    The other roles would be refused the same way on their first call; one resume fixes all.
    """
    if not exc.fix:
        return ""
    role, _, assignment = exc.fix.partition(".")
    endpoint = next(settings.role(r).endpoint for r in ROLES if r == role)
    roles = [r for r in ROLES if settings.role(r).endpoint == endpoint]
    return "".join(f" --set {r}.{assignment}" for r in roles)


# What a resume may change: how requests are shaped for an endpoint, never what the search does.
RESUME_SETTABLE = ("provider", "structured_output", "supports_n", "reasoning_effort")


def check_request_shaping(changes: dict[str, Any]) -> None:
    """Raise ConfigError unless `changes` only sets valid request-shaping values of roles."""
    for role, values in changes.items():
        keys = list(values) if isinstance(values, dict) and role in ROLES else [None]
        for key in keys:
            if key not in RESUME_SETTABLE:
                name = f"{role}.{key}" if key else role
                raise ConfigError(
                    f"resume --set cannot change {name!r}: only <role>."
                    f"{{{','.join(RESUME_SETTABLE)}}} (role: {', '.join(ROLES)})"
                )
        try:
            RoleSettings(**values)
        except ValidationError as exc:
            raise ConfigError(f"{role}: {format_validation_error(exc)}") from None


def change_request_shaping(
    settings: Settings, changes: dict[str, Any], store: RunStore, run_id: str
) -> Settings:
    """The stored settings with `changes` to the roles' request shaping, saved with the run."""
    updated = settings_from_stored(deep_merge(settings.public_dict(), changes))
    store.update_run(run_id, settings=json.dumps(updated.public_dict()))
    return updated


def optimize(settings: Settings, **kwargs: Any) -> RunResult:
    """Run a search to its end (or a pause) and return its result; see `optimize_async`."""
    return asyncio.run(optimize_async(settings, **kwargs))


def resume(run_id: str, **kwargs: Any) -> RunResult:
    """Resume a stopped or paused run; see `resume_async`."""
    return asyncio.run(resume_async(run_id, **kwargs))


__all__ = [
    "ConfigError",
    "DataFileError",
    "RunError",
    "RunPaused",
    "astream_optimize",
    "build_graph",
    "optimize",
    "optimize_async",
    "resume",
    "resume_async",
]
