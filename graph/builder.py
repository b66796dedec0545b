"""The DRPO state machine, wired in one place. It reads like the algorithm:

prepare → [stage A: optimize_example × examples] → collect_examples
→ start_level → select_rewards × queries (+ rewrite × beam after the root level)
→ record_proposals → generate × (proposal, query) → evaluate → beam_select
→ (next level | start_validation → select_rewards → … → finalize)
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from drpo.graph.routing import (
    route_after_level,
    route_examples,
    route_level,
    route_scoring,
    route_validation,
)
from drpo.nodes.approve import approve
from drpo.nodes.beam import beam_select, record_proposals
from drpo.nodes.context import RunContext
from drpo.nodes.evaluate import evaluate
from drpo.nodes.examples import collect_examples, optimize_example
from drpo.nodes.finalize import finalize
from drpo.nodes.generate import generate
from drpo.nodes.level import start_level, start_validation
from drpo.nodes.prepare import prepare
from drpo.nodes.rewrite import rewrite
from drpo.nodes.select_rewards import select_rewards
from drpo.state.graph_state import RunInput, RunOutput, SearchState


def build_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[SearchState, RunContext, RunInput, RunOutput]:
    graph = StateGraph(
        SearchState, context_schema=RunContext, input_schema=RunInput, output_schema=RunOutput
    )
    graph.add_node("prepare", prepare)
    graph.add_node("optimize_example", optimize_example)
    graph.add_node("collect_examples", collect_examples)
    graph.add_node("start_level", start_level)
    graph.add_node("select_rewards", select_rewards)
    graph.add_node("rewrite", rewrite)
    graph.add_node("record_proposals", record_proposals)
    graph.add_node("generate", generate, destinations=("evaluate",))
    graph.add_node("evaluate", evaluate, destinations=("beam_select", "approve", "finalize"))
    graph.add_node(
        "approve",
        approve,
        destinations=(
            "generate",
            "approve",
            "beam_select",
            "start_level",
            "start_validation",
            "finalize",
        ),
    )
    graph.add_node("beam_select", beam_select)
    graph.add_node("start_validation", start_validation)
    graph.add_node("finalize", finalize)

    graph.add_edge(START, "prepare")
    graph.add_conditional_edges("prepare", route_examples, ["optimize_example", "start_level"])
    graph.add_edge("optimize_example", "collect_examples")
    graph.add_edge("collect_examples", "start_level")
    graph.add_conditional_edges("start_level", route_level, ["select_rewards", "rewrite"])
    graph.add_edge("select_rewards", "record_proposals")
    graph.add_edge("rewrite", "record_proposals")
    graph.add_conditional_edges(
        "record_proposals", route_scoring, ["generate", "beam_select", "finalize"]
    )
    graph.add_conditional_edges(
        "beam_select", route_after_level, ["approve", "start_level", "start_validation"]
    )
    graph.add_conditional_edges(
        "start_validation", route_validation, ["select_rewards", "finalize"]
    )
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)
