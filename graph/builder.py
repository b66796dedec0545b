"""The DRPO state machine, wired in one place. It reads like the algorithm:

prepare → [stage A: optimize_example × examples (+ the root level's and the validation
  round's aspect choices, queued behind them)] → collect_examples
→ start_level (retrieves each query's examples) → select_rewards × queries
  (+ rewrite × beam after the root level; at the root, prefetch_aspects × validation queries
  in the slots it leaves idle) → record_proposals
→ score × (proposal, query), each task its own generate → evaluate chain
  (+ the next level's aspect choices, queued behind them) → beam_select
→ (next level | start_validation → select_rewards → … → finalize)

An aspect choice depends on its query alone, so the prefetching tasks only fill slots a step
leaves idle; the level that needs the choice finds it in the run store without a call. One
function serves three node names because a node's successor is fixed by the graph.

Scoring is a compiled subgraph rather than two fan-outs of the parent graph: LangGraph runs a
graph in supersteps, and every task of one superstep waits for the whole previous one, so a
judgement sent from `generate` could not start before the level's slowest answer arrived. Inside
the subgraph each task goes on to its judgement as soon as its own answer exists.

The subgraph keeps no checkpoints of its own (inheriting the parent's checkpointer would add
four per (candidate, query) pair and 65 % to the checkpoint database): the parent records each
finished scoring task's score with its checkpoint, and a task cut short by a crash is run again
from its start, its answer replayed from the run's reply ledger rather than paid for twice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_DURABILITY
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from drpo.graph.routing import (
    route_after_level,
    route_examples,
    route_level,
    route_scored,
    route_scoring,
    route_validation,
)
from drpo.nodes.approve import approve
from drpo.nodes.beam import beam_select, record_proposals
from drpo.nodes.context import RunContext
from drpo.nodes.evaluate import evaluate
from drpo.nodes.examples import collect_examples, optimize_example
from drpo.nodes.finalize import finalize
from drpo.nodes.generate import SCORE_NODE, generate
from drpo.nodes.level import start_level, start_validation
from drpo.nodes.prepare import prepare
from drpo.nodes.rewrite import rewrite
from drpo.nodes.select_rewards import (
    PREFETCH_IN_STAGE_A,
    PREFETCH_NEXT_LEVEL,
    prefetch_aspects,
    select_rewards,
)
from drpo.state.graph_state import (
    GenerateTask,
    RunInput,
    RunOutput,
    ScoreOutput,
    ScoreState,
    SearchState,
)


def task_node(node: Callable[..., Any]) -> Any:
    """A node that `Send` calls with a task of its own (a TypedDict), not with the graph state.

    LangGraph reads the task type from the node's first parameter at run time; its `add_node`
    overloads only type such a node through a TypedDict-like protocol that mypy does not
    match with a TypedDict, so the node is handed over untyped.
    """
    return node


@cache
def build_score_graph() -> CompiledStateGraph[ScoreState, RunContext, GenerateTask, ScoreOutput]:
    """One (candidate, query) pair: the base model answers, then the judge scores the answer.

    Compiled on first use and kept, so that importing this module compiles nothing.
    """
    graph = StateGraph(
        ScoreState, context_schema=RunContext, input_schema=GenerateTask, output_schema=ScoreOutput
    )
    graph.add_node("generate", task_node(generate), destinations=("evaluate",))
    graph.add_node("evaluate", task_node(evaluate))
    graph.add_edge(START, "generate")
    graph.add_edge("evaluate", END)
    return graph.compile(checkpointer=False, name=SCORE_NODE)


async def score(
    task: GenerateTask, runtime: Runtime[RunContext], config: RunnableConfig
) -> ScoreOutput:
    """The fan-out's target: one pair's whole chain, started as soon as a slot is free."""
    # Without an explicit durability the subgraph inherits the parent's "sync" and, in LangGraph
    # 1.2, then waits for a checkpoint it never makes (an AttributeError); so it runs called
    # from this node rather than attached as one, with durability "exit". Given as the
    # `durability=` argument, LangGraph warns that a graph without a checkpointer ignores it;
    # set in the config (where LangGraph itself hands a durability down to subgraphs) it does
    # not, so no process-wide warnings filter is needed.
    configurable = {**config.get("configurable", {}), CONFIG_KEY_DURABILITY: "exit"}
    result = await build_score_graph().ainvoke(
        task, {**config, "configurable": configurable}, context=runtime.context
    )
    return ScoreOutput(scores=result["scores"])


# Where a person's decision can send the search (approve returns a Command with one of these).
APPROVE_DESTINATIONS = (
    SCORE_NODE,
    "approve",
    "beam_select",
    "start_level",
    "start_validation",
    "finalize",
)


def build_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[SearchState, RunContext, RunInput, RunOutput]:
    """The whole search, compiled with `checkpointer` (drpo's runs pass their SQLite saver)."""
    graph = StateGraph(
        SearchState, context_schema=RunContext, input_schema=RunInput, output_schema=RunOutput
    )
    graph.add_node("prepare", prepare)
    graph.add_node("optimize_example", task_node(optimize_example))
    graph.add_node("collect_examples", collect_examples)
    graph.add_node("start_level", start_level)
    graph.add_node("select_rewards", task_node(select_rewards))
    graph.add_node("prefetch_aspects", task_node(prefetch_aspects))
    graph.add_node(PREFETCH_IN_STAGE_A, task_node(prefetch_aspects))
    graph.add_node(PREFETCH_NEXT_LEVEL, task_node(prefetch_aspects))
    graph.add_node("rewrite", task_node(rewrite))
    graph.add_node("record_proposals", record_proposals)
    graph.add_node(SCORE_NODE, task_node(score))
    graph.add_node("approve", approve, destinations=APPROVE_DESTINATIONS)
    graph.add_node("beam_select", beam_select)
    graph.add_node("start_validation", start_validation)
    graph.add_node("finalize", finalize)

    graph.add_edge(START, "prepare")
    graph.add_conditional_edges(
        "prepare", route_examples, ["optimize_example", PREFETCH_IN_STAGE_A, "start_level"]
    )
    graph.add_edge("optimize_example", "collect_examples")
    graph.add_edge(PREFETCH_IN_STAGE_A, "collect_examples")
    graph.add_edge("collect_examples", "start_level")
    graph.add_conditional_edges(
        "start_level", route_level, ["select_rewards", "prefetch_aspects", "rewrite"]
    )
    graph.add_edge("select_rewards", "record_proposals")
    graph.add_edge("prefetch_aspects", "record_proposals")
    graph.add_edge("rewrite", "record_proposals")
    graph.add_conditional_edges(
        "record_proposals",
        route_scoring,
        [SCORE_NODE, PREFETCH_NEXT_LEVEL, "beam_select", "finalize"],
    )
    graph.add_edge(PREFETCH_NEXT_LEVEL, "beam_select")
    graph.add_conditional_edges(SCORE_NODE, route_scored, ["beam_select", "approve", "finalize"])
    graph.add_conditional_edges(
        "beam_select", route_after_level, ["approve", "start_level", "start_validation"]
    )
    graph.add_conditional_edges(
        "start_validation", route_validation, ["select_rewards", "finalize"]
    )
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)


def make_graph(
    config: RunnableConfig,
) -> CompiledStateGraph[SearchState, RunContext, RunInput, RunOutput]:
    """The graph factory that `langgraph.json` names for LangGraph's CLI, server and Studio.

    LangGraph's server calls a one-argument factory with the run's config, not a checkpointer,
    and attaches its own checkpointer and store to the graph it gets back.
    """
    del config  # the graph's shape does not depend on the run; its settings come as context
    return build_graph()
