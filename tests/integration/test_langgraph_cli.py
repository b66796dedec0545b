"""LangGraph's tooling (`langgraph dev`, its server, Studio) loads the graph from langgraph.json.

The test follows the CLI's path: `langgraph_cli.config` validates the file, `langgraph dev` hands
its `graphs` entry to the in-memory server as LANGSERVE_GRAPHS (with the environment that
`langgraph_api.cli.run_server` sets), and the server imports each entry, classifies a callable as
a graph factory by its signature and, per request, calls it with the run's config. The server's
modules read their settings at import time, so this runs in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from langgraph_cli.config import validate_config_file

ROOT = Path(__file__).resolve().parents[2]

# What the server does with a graph id on a request (langgraph_api.graph.get_graph), given
# the checkpointer it manages; prints what it got back.
SERVER_SIDE = """
import asyncio, json
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from langgraph.store.memory import InMemoryStore
from langgraph_api import graph as server_graphs

async def main():
    await server_graphs.collect_graphs_from_env(register=True)
    saver = InMemorySaver()
    async with server_graphs.get_graph(
        "drpo", {"configurable": {"thread_id": "studio"}}, checkpointer=saver,
        store=InMemoryStore(), access_context="assistants.read",
    ) as graph:
        print(json.dumps({
            "factory": server_graphs.is_factory("drpo"),
            "pregel": isinstance(graph, Pregel),
            "server_checkpointer": graph.checkpointer is saver,
            "nodes": sorted(graph.get_graph().nodes),
        }))

asyncio.run(main())
"""


def test_the_langgraph_server_builds_the_graph_from_langgraph_json() -> None:
    config = validate_config_file(ROOT / "langgraph.json")
    env = {
        **os.environ,
        "LANGSERVE_GRAPHS": json.dumps(config["graphs"]),
        "LANGSMITH_LANGGRAPH_API_VARIANT": "local_dev",
        "DATABASE_URI": ":memory:",
        "REDIS_URI": "fake",
        "MIGRATIONS_PATH": "__inmem",
        "LANGGRAPH_RUNTIME_EDITION": "inmem",
        "LANGGRAPH_DISABLE_FILE_PERSISTENCE": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", SERVER_SIDE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["factory"] and loaded["pregel"] and loaded["server_checkpointer"]
    assert {"prepare", "start_level", "score", "beam_select", "finalize"} <= set(loaded["nodes"])


def test_importing_the_builder_compiles_nothing_and_leaves_warnings_alone() -> None:
    # Libraries below drpo set filters of their own on import; only drpo's modules are held to it.
    probe = """
import sys, warnings
from langgraph.graph import StateGraph
compiled, filtering = [], []
original = StateGraph.compile
StateGraph.compile = lambda self, *a, **k: compiled.append(1) or original(self, *a, **k)

def spy(set_filter):
    def recorded(*args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("drpo"):
            filtering.append(caller)
        return set_filter(*args, **kwargs)
    return recorded

warnings.filterwarnings = spy(warnings.filterwarnings)
warnings.simplefilter = spy(warnings.simplefilter)
import drpo.graph.builder
assert compiled == [], compiled
assert filtering == [], filtering
"""
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=120)
