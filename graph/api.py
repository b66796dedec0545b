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
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from drpo.backends.embeddings import EmbeddingTable, embed_in_child
from drpo.backends.errors import LLMCallError
from drpo.backends.factory import build_role_models
from drpo.backends.preflight import check_settings
from drpo.backends.retrieval import build_retriever, resolve_kind
from drpo.checkpoints.saver import open_run_checkpointer
from drpo.checkpoints.store import RunRecorder, RunStore, new_run_id
from drpo.data.loaders import (
    DataFileError,
    load_examples,
    load_queries,
    seed_examples,
    train_queries,
    validation_queries,
)
from drpo.graph.builder import build_graph
from drpo.nodes.budget import BudgetGate, BudgetReached
from drpo.nodes.context import RunContext
from drpo.nodes.level import level_batch
from drpo.nodes.metric import Metric, import_metric, import_path_of, metric_name
from drpo.nodes.prepare import seeded_order
from drpo.prompts.rubric import BUILTIN_RUBRIC, Rubric, load_rubric, parse_rubric
from drpo.state.settings import ROLES, ConfigError, Settings, settings_from_stored
from drpo.state.types import Example, Query, RunResult

EventHandler = Callable[[dict[str, Any]], None]
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


@dataclass
class RunData:
    train: list[Query]
    validation: list[Query]
    examples: list[Example]


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
    return RunData(train=train, validation=validation, examples=examples)


def texts_to_embed(settings: Settings, data: RunData) -> tuple[list[str], list[str]]:
    """Every text a search can embed: the examples' queries and the queries it can reach."""
    search = settings.search
    order = seeded_order([q.id for q in data.train], settings.seed)
    levels = search.depth + search.max_extension + 1
    reachable = [
        q.query
        for level in range(levels)
        for q in level_batch(order, data.train, level, search.batch_size)
    ]
    validation = [q.query for q in data.validation[: search.validation_size]]
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
        )
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


@asynccontextmanager
async def open_run(
    settings: Settings, run_id: str, store: RunStore, metric: Metric | None = None
) -> AsyncIterator[
    tuple[CompiledStateGraph[Any, Any, Any, Any], RunContext, BaseCheckpointSaver[Any]]
]:
    """Everything a run needs while it executes: graph, context, checkpointer, model servers."""
    data = load_run_data(settings)
    row = store.run(run_id) or {"id": run_id}
    rubric = stored_rubric(row)
    metric = stored_metric(settings, run_id, metric)
    async with AsyncExitStack() as stack:
        pool = None
        if _uses_embedded(settings):
            from drpo.backends.embedded import EmbeddedServerPool

            pool = EmbeddedServerPool(slots=settings.embedded_slots, ctx=settings.embedded_ctx)
            stack.callback(pool.close)
        recorder = RunRecorder(store, run_id)
        models = await asyncio.to_thread(
            build_role_models, settings, pool=pool, cache=recorder, sink=recorder, run_id=run_id
        )
        stack.push_async_callback(models.aclose)
        if not rubric.is_builtin:
            for role in ("selector", "judge"):
                models[role].rubric_hash = rubric.hash
        checkpointer = await stack.enter_async_context(open_run_checkpointer(settings))
        retrieval = resolve_kind(settings.data.retrieval)
        table: EmbeddingTable | None = None
        if retrieval == "embeddings":
            table = await asyncio.to_thread(embed_in_child, *texts_to_embed(settings, data))

        def retriever_for(examples: list[Example]) -> Any:
            return build_retriever(examples, retrieval, table)

        budget = BudgetGate(
            settings.budget,
            spent=lambda: store.spent(run_id),
            active_before=row.get("active_seconds") or 0.0,
        )
        context = RunContext(
            budget=budget,
            run_id=run_id,
            settings=settings,
            models=models,
            recorder=store,
            retriever_for=retriever_for,
            train=data.train,
            validation=data.validation,
            seed_examples=data.examples,
            rubric=rubric,
            metric=metric,
        )
        yield build_graph(checkpointer), context, checkpointer


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
                if mode == "custom":
                    # With several stream modes astream yields (mode, chunk) pairs, which its
                    # annotations do not describe: a custom chunk is the event a node wrote.
                    on_event(chunk)  # type: ignore[arg-type]
                else:
                    for node in chunk:
                        on_event({"event": "node", "node": node})
    except BudgetReached as exc:
        store.update_run(run_id, status="paused", error=str(exc))
        # Twice the spent budget as an example of a larger one.
        raise RunPaused(run_id, str(exc), f" {exc.flag} {int(exc.limit * 2)}") from None
    except LLMCallError as exc:
        store.update_run(run_id, status="paused", error=str(exc))
        raise RunPaused(run_id, str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        store.update_run(run_id, status="paused", error="interrupted by the user")
        raise
    snapshot = await graph.aget_state(config)
    if snapshot.next:
        store.update_run(run_id, status="waiting")
        raise RunPaused(run_id, WAITING)
    result = snapshot.values.get("result")
    if not isinstance(result, RunResult):
        store.update_run(run_id, status="failed", error="the graph ended without a result")
        raise RunError(f"run {run_id} ended without a result")
    return result


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
            on_event({"event": "start", "run_id": run_id, "store": str(settings.store)})
            for warning in warnings:
                on_event({"event": "warning", "message": warning})
        try:
            async with open_run(settings, run_id, store, metric) as (graph, context, _):
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
    store_path: Path = Path("drpo-runs/runs.db"),
    on_event: EventHandler | None = None,
    budget: dict[str, Any] | None = None,
    metric: Metric | None = None,
) -> RunResult:
    """Continue a run from its last checkpoint with the settings it was started with.

    `budget` replaces budget limits (e.g. {"calls": 500}) for this and later resumes. `metric`
    is needed only when the run was started with a Python callable that has no import path.
    """
    if not Path(store_path).exists():
        raise RunError(f"run store not found: {store_path}")
    store = RunStore(store_path)
    try:
        row = store.claim_run(run_id)  # refuses while another live process drives the run
        if row is None:
            raise RunError(f"no run {run_id!r} in {store_path}")
        if row["status"] == "completed":
            raise RunError(f"run {run_id} is already completed")
        if on_event is not None:
            on_event({"event": "start", "run_id": run_id, "store": str(store_path)})
        settings = settings_from_stored(json.loads(row["settings"]))
        stored_metric(settings, run_id, metric)  # refuse before the budget is rewritten
        if budget:
            settings = raise_budget(settings, budget, store, row)
        async with open_run(settings, run_id, store, metric) as (graph, context, _):
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


def optimize(settings: Settings, **kwargs: Any) -> RunResult:
    return asyncio.run(optimize_async(settings, **kwargs))


def resume(run_id: str, **kwargs: Any) -> RunResult:
    return asyncio.run(resume_async(run_id, **kwargs))


__all__ = [
    "ConfigError",
    "DataFileError",
    "RunError",
    "RunPaused",
    "build_graph",
    "optimize",
    "optimize_async",
    "resume",
    "resume_async",
]
