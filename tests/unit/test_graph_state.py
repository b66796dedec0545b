"""Tests for the search state's schema: the keys `prepare` writes are the required ones, and
state from a checkpoint written before `recent_feedback` existed still reads."""

from __future__ import annotations

import asyncio
from typing import Any, NotRequired, cast, get_origin, get_type_hints

from langgraph.runtime import Runtime

from drpo.nodes.context import RunContext
from drpo.nodes.prepare import prepare
from drpo.state.graph_state import SearchState, earlier_feedback
from drpo.state.settings import load_settings
from drpo.state.types import Query


class _Recorder:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def update_run(self, **fields: object) -> None:
        self.updates.append(fields)


def _prepared() -> dict[str, Any]:
    context = RunContext(
        run_id="r1",
        settings=load_settings(),
        models=cast(Any, None),
        ledger=cast(Any, _Recorder()),
        retriever_for=cast(Any, None),
        train=[Query(id=f"t{i}", query=f"question {i}") for i in range(3)],
    )
    return asyncio.run(prepare({"run_id": "r1"}, Runtime(context=context)))


def _required_keys() -> set[str]:
    # Read from the hints: with postponed annotations `__required_keys__` cannot see NotRequired.
    hints = get_type_hints(SearchState, include_extras=True)
    return {key for key, hint in hints.items() if get_origin(hint) is not NotRequired}


def test_prepare_writes_every_required_key() -> None:
    written = set(_prepared())
    assert _required_keys() <= written
    # What prepare writes beyond the required keys is only what older checkpoints may lack.
    assert written - _required_keys() == {"recent_feedback"}


def test_the_level_starts_before_the_root_in_one_place() -> None:
    assert _prepared()["level"] == -1


def test_a_checkpoint_without_recent_feedback_reads_as_none_seen() -> None:
    old = {key: value for key, value in _prepared().items() if key != "recent_feedback"}
    assert earlier_feedback(cast(SearchState, old)) == {}
    assert earlier_feedback(cast(SearchState, _prepared())) == {}
