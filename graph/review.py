"""Human review from Python: read what a waiting run asks, answer it, list transitions, fork.

A run waiting for a decision is just a LangGraph thread paused at the approve node's
`interrupt()`; its question is read from the checkpoint, so it survives the process exiting and
the machine restarting. Answering resumes the thread with `Command(resume=decision)`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from drpo.checkpoints.saver import open_run_checkpointer
from drpo.checkpoints.store import RunStore, new_run_id
from drpo.graph.api import EventHandler, RunError, _drive, open_run, run_config
from drpo.graph.builder import build_graph
from drpo.nodes.policy import child_ancestry
from drpo.state.settings import Settings, settings_from_stored
from drpo.state.types import Candidate, ReviewDecision, ReviewRequest, RunResult


def _open(store_path: Path, run_id: str) -> tuple[RunStore, dict[str, Any], Settings]:
    if not Path(store_path).exists():
        raise RunError(f"run store not found: {store_path}")
    store = RunStore(store_path)
    row = store.run(run_id)
    if row is None:
        store.close()
        raise RunError(f"no run {run_id!r} in {store_path}")
    return store, row, settings_from_stored(json.loads(row["settings"]))


async def pending_request(run_id: str, store_path: Path) -> ReviewRequest | None:
    """The question a waiting run asks, or None when it waits for nothing."""
    store, _, settings = _open(store_path, run_id)
    store.close()
    async with open_run_checkpointer(settings) as saver:
        snapshot = await build_graph(saver).aget_state(run_config(settings, run_id))
    for task in snapshot.tasks:
        for pending in task.interrupts:
            value = pending.value
            if isinstance(value, ReviewRequest):
                return value
            return ReviewRequest.model_validate(value)
    return None


async def decide_async(
    run_id: str,
    decision: ReviewDecision,
    *,
    store_path: Path,
    on_event: EventHandler | None = None,
) -> RunResult:
    """Answer a waiting run's question and let it go on (to the next question or the end)."""
    request = await pending_request(run_id, store_path)
    if request is None:
        raise RunError(f"run {run_id} is not waiting for a review decision")
    if decision.candidate_id != request.candidate_id:
        raise RunError(
            f"candidate {decision.candidate_id!r} is not awaiting review "
            f"(run {run_id} waits on {request.candidate_id!r})"
        )
    if decision.decision == "edit" and not (decision.prompt or "").strip():
        raise RunError("an edit needs the new prompt text")
    store, _, settings = _open(store_path, run_id)
    try:
        store.claim_run(run_id)  # refuses while another live process drives the run
        async with open_run(settings, run_id, store, on_event) as (graph, context, _):
            return await _drive(
                graph,
                context,
                Command(resume=decision.model_dump()),
                store,
                on_event,
            )
    finally:
        store.release_run(run_id)
        store.close()


@dataclass(frozen=True)
class Transition:
    """One candidate's move at a level: its reward, whether it survived, a person's say."""

    level: int
    parent_id: str | None
    candidate_id: str
    level_reward: float | None
    value: float | None
    survived: bool
    decision: str


def transitions(run_id: str, store_path: Path) -> list[Transition]:
    """Every parent → child step of the search, with its reward and any review decision."""
    store, _, _ = _open(store_path, run_id)
    try:
        decisions = {
            row["candidate_id"]: row["decision"]
            for row in store.db["decisions"].rows_where("run_id = ?", [run_id], order_by="id")
        }
        return [
            Transition(
                level=row["level"],
                parent_id=row["parent_id"],
                candidate_id=row["id"],
                level_reward=row["level_reward"],
                value=row["value"],
                survived=bool(row["survived"]),
                decision=decisions.get(row["id"], ""),
            )
            for row in store.db["candidates"].rows_where(
                "run_id = ?", [run_id], order_by="level, created_at"
            )
        ]
    finally:
        store.close()


@dataclass(frozen=True)
class Step:
    """One checkpoint of a run: where a fork can start."""

    step: int
    checkpoint_id: str
    level: int | None
    phase: str
    next: tuple[str, ...]


async def steps(run_id: str, store_path: Path) -> list[Step]:
    """The run's checkpoints, oldest first: the points it can be forked from."""
    store, _, settings = _open(store_path, run_id)
    store.close()
    async with open_run_checkpointer(settings) as saver:
        graph = build_graph(saver)
        history = [s async for s in graph.aget_state_history(run_config(settings, run_id))]
    return [
        Step(
            step=int(s.metadata.get("step", -1)) if s.metadata else -1,
            checkpoint_id=str(s.config["configurable"]["checkpoint_id"]),
            level=s.values.get("level"),
            phase=str(s.values.get("phase", "")),
            next=tuple(s.next),
        )
        for s in reversed(history)
    ]


async def fork_async(
    run_id: str, at_step: int, *, store_path: Path, prompt: str | None = None
) -> str:
    """Start a new run from a past step of `run_id`, optionally with a person's prompt.

    The parent's thread is only read: its checkpoint at that step (and the step's pending
    writes) is copied into a new thread, so the original run stays byte for byte as it was.
    """
    store, row, settings = _open(store_path, run_id)
    try:
        async with open_run_checkpointer(settings) as saver:
            graph = build_graph(saver)
            chosen = next((s for s in await steps(run_id, store_path) if s.step == at_step), None)
            if chosen is None:
                raise RunError(f"run {run_id} has no step {at_step} (see: drpo history {run_id})")
            if prompt is not None and chosen.next != ("start_level",):
                raise RunError(
                    f"a new prompt can only be set at a level boundary (a step whose next node "
                    f"is start_level); step {at_step} comes before "
                    f"{', '.join(chosen.next) or 'the end'}"
                )
            fork_id = new_run_id()
            copied = await _copy_checkpoint(saver, run_id, chosen, fork_id)
            if prompt is not None:
                await _start_from_person_prompt(graph, copied, prompt, settings)
        store.create_run(
            fork_id,
            settings.public_dict(),
            json.loads(row["query_order"] or "[]"),
            parent_run=run_id,
        )
        store.update_run(
            fork_id,
            status="paused",
            note=f"forked from {run_id} at step {at_step}",
            rubric=row.get("rubric"),
        )
        return fork_id
    finally:
        store.close()


async def _copy_checkpoint(
    saver: BaseCheckpointSaver[Any], run_id: str, chosen: Step, fork_id: str
) -> RunnableConfig:
    """Copy the parent's checkpoint at `chosen` and its pending writes into thread `fork_id`."""
    source: RunnableConfig = {
        "configurable": {
            "thread_id": run_id,
            "checkpoint_ns": "",
            "checkpoint_id": chosen.checkpoint_id,
        }
    }
    # The copy goes through the saver, not the graph's public update API, because none
    # of LangGraph's public ways (1.2) gives the child the parent's state at any step
    # while leaving the parent's thread untouched:
    # - `aupdate_state(child, values, as_node=...)` re-runs the producer's routing, which
    #   needs the run's runtime context (LangGraph does not pass one: "Missing required
    #   config key 'N/A' for 'route_level'"), cannot stand for a superstep of several
    #   nodes (stage A, a level's selections and rewrites), and drops the writes of the
    #   branches already finished at that step, so they would be paid for again; on a
    #   stub run only 6 of 25 steps came out with the parent's values and next nodes;
    # - `as_node="__copy__"` forks inside the same thread: it adds a checkpoint to the
    #   parent's thread;
    # - `acopy_thread` is not implemented by AsyncSqliteSaver (the base raises
    #   NotImplementedError) and copies a whole thread, not its state at one step.
    # Copying the checkpoint and its pending writes reads the parent only.
    saved = await saver.aget_tuple(source)
    assert saved is not None
    target: RunnableConfig = {"configurable": {"thread_id": fork_id, "checkpoint_ns": ""}}
    copied = await saver.aput(
        target,
        saved.checkpoint,
        # Savers store metadata keys their TypedDict does not declare.
        {**saved.metadata, "source": "fork", "forked_from": f"{run_id}@{chosen.step}"},  # type: ignore[typeddict-unknown-key]
        saved.checkpoint["channel_versions"],
    )
    writes: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for task_id, channel, value in saved.pending_writes or []:
        writes[task_id].append((channel, value))
    for task_id, task_writes in writes.items():
        await saver.aput_writes(copied, task_writes, task_id)
    return copied


async def _start_from_person_prompt(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    copied: RunnableConfig,
    prompt: str,
    settings: Settings,
) -> None:
    """Make a person's prompt the fork's whole beam, as the best beam prompt's child."""
    snapshot = await graph.aget_state(copied)
    beam: list[Candidate] = snapshot.values.get("beam", [])
    best = beam[0] if beam else None
    person = Candidate(
        id=f"L{snapshot.values.get('level', 0)}-person",
        prompt=prompt.strip(),
        parent_id=best.id if best else None,
        depth=best.depth if best else 0,
        path_rewards=best.path_rewards if best else (),
        ancestry=child_ancestry(best, settings.search.history) if best else (),
    )
    # As if stage A had just ended: its only edge leads to the next level.
    await graph.aupdate_state(
        copied, {"beam": [person], "feedback": {}}, as_node="collect_examples"
    )
