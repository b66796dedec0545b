"""Tests for the search policy on its own, with no graph: the schedule and the shared rules, and
that the estimate and the embedding warm-up read the same schedule."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from drpo.graph.api import texts_to_embed
from drpo.nodes.context import RunData
from drpo.nodes.estimate import estimate_run
from drpo.nodes.level import finalists
from drpo.nodes.policy import (
    baseline_value,
    child_ancestry,
    is_starting_prompt,
    level_batch,
    next_after_level,
    rejected_ids,
    schedule,
    skip_rule_on,
)
from drpo.nodes.prepare import seeded_order
from drpo.state.settings import Settings, load_settings
from drpo.state.types import Candidate, Example, Query, ReviewDecision

START = "You are a helpful assistant."


def _settings(**search: Any) -> Settings:
    return load_settings(overrides={"search": {"initial_prompt": START, **search}})


def _queries(prefix: str, count: int) -> list[Query]:
    return [Query(id=f"{prefix}{i}", query=f"{prefix} question {i}") for i in range(count)]


def _examples(count: int) -> list[Example]:
    return [Example(id=f"ex-{i}", query=f"q{i}", answer=f"a{i}") for i in range(count)]


def test_the_skip_rule_extends_the_schedule_only_when_it_is_on() -> None:
    on = schedule(_settings(depth=2, max_extension=3, skip_threshold=4.5), 0, 0)
    off = schedule(_settings(depth=2, max_extension=3, skip_threshold=5.0), 0, 0)
    assert skip_rule_on(_settings(skip_threshold=4.5)) and not skip_rule_on(_settings())
    assert (on.levels, on.max_levels, on.extension) == (3, 6, 3)
    assert (off.levels, off.max_levels, off.extension) == (3, 3, 0)


def test_stage_a_size_follows_the_stage_settings_and_the_examples() -> None:
    def size(examples: int, **stage: Any) -> int:
        settings = load_settings(overrides={"examples": stage})
        return schedule(settings, examples, 0).stage_a_size

    assert size(5, enabled=True, rounds=1, limit=None) == 5
    assert size(5, enabled=True, rounds=1, limit=2) == 2
    assert size(1, enabled=True, rounds=1, limit=2) == 1
    assert size(5, enabled=False, rounds=1) == 0
    assert size(5, enabled=True, rounds=0) == 0
    assert size(0, enabled=True, rounds=1) == 0


def test_validation_size_and_finalists_are_capped_by_the_data() -> None:
    plan = schedule(_settings(validation_size=4, finalists=3, batch_size=2), 0, 2)
    assert (plan.validation_size, plan.finalists, plan.queries_per_level) == (2, 3, 2)
    assert schedule(_settings(validation_size=0), 0, 9).validation_size == 0


def test_estimate_and_embedding_warm_up_reach_the_same_levels() -> None:
    # Each level a new training query, so the levels reached show in the texts embedded.
    data = RunData(train=_queries("t", 20), validation=_queries("v", 3), examples=_examples(2))
    for threshold in (4.5, 5.0):
        settings = _settings(
            depth=2, max_extension=4, skip_threshold=threshold, batch_size=1, validation_size=1
        )
        plan = schedule(settings, len(data.examples), len(data.validation))
        _, queries = texts_to_embed(settings, data)
        order = seeded_order([q.id for q in data.train], settings.seed)
        reached = [level_batch(order, data.train, level, 1)[0].query for level in range(20)]
        assert queries[:-1] == reached[: plan.max_levels]
        assert queries[-1] == data.validation[0].query
        assert estimate_run(settings, data).max_levels == plan.max_levels
    # With the skip rule off the depth is never extended: nothing past `depth` is embedded.
    off = _settings(depth=2, skip_threshold=5.0, batch_size=1, validation_size=1)
    assert len(texts_to_embed(off, data)[1]) == 3 + 1


def test_finalists_drop_prompts_that_differ_only_in_case_and_whitespace() -> None:
    leaders = [
        Candidate(id="a", prompt="Be precise."),
        Candidate(id="b", prompt="be   PRECISE."),
        Candidate(id="c", prompt="Be kind."),
    ]
    baseline = Candidate(id="baseline", prompt=START)
    chosen = finalists({"leaders": leaders}, 2, baseline)  # type: ignore[arg-type]
    assert [c.id for c in chosen] == ["a", "c", "baseline"]
    # A leader that is the starting prompt (whitespace aside) stands in for the baseline.
    restated = [Candidate(id="s", prompt=f"  {START}\n")]
    assert [c.id for c in finalists({"leaders": restated}, 2, baseline)] == ["s"]  # type: ignore[arg-type]


def test_baseline_value_finds_the_starting_prompt_however_spaced() -> None:
    settings = _settings()
    ranking = [
        (Candidate(id="x", prompt="Be kind."), 4.0),
        (Candidate(id="baseline", prompt=START.upper()), 3.0),
    ]
    assert is_starting_prompt(ranking[1][0], settings)
    assert baseline_value(ranking, settings) == 3.0
    assert baseline_value(ranking, settings, besides="baseline") is None


def test_child_ancestry_keeps_the_last_versions_and_none_without_history() -> None:
    parent = Candidate(id="p", prompt="v3", ancestry=("v1", "v2"))
    assert child_ancestry(parent, 2) == ("v2", "v3")
    assert child_ancestry(parent, 5) == ("v1", "v2", "v3")
    assert child_ancestry(parent, 0) == ()


def test_rejected_ids_are_rejections_and_edits() -> None:
    reviewed = {
        cid: ReviewDecision(candidate_id=cid, decision=decision)
        for cid, decision in (("a", "approve"), ("r", "reject"), ("e", "edit"))
    }
    assert rejected_ids(reviewed) == {"r", "e"}


def test_next_after_level_goes_to_validation_at_the_depth_limit_or_a_stop() -> None:
    state = {"level": 1, "depth_limit": 2, "stop_requested": False}
    assert next_after_level(state) == "start_level"  # type: ignore[arg-type]
    assert next_after_level({**state, "level": 2}) == "start_validation"  # type: ignore[arg-type]
    assert next_after_level({**state, "stop_requested": True}) == "start_validation"  # type: ignore[arg-type]


def test_routing_takes_its_rules_from_the_policy_only() -> None:
    import drpo.graph.routing as routing

    tree = ast.parse(Path(routing.__file__).read_text())
    node_modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drpo.nodes.")
    }
    # context: the runtime context type; generate: the scoring tasks it fans out;
    # select_rewards: the names of its prefetch nodes.
    allowed = {"policy", "context", "generate", "select_rewards"}
    assert {m.removeprefix("drpo.nodes.") for m in node_modules} <= allowed
