"""Tests for the final pick and the validation set: the starting prompt competes, best seen is
ranked by a prompt's own reward, and validation is stratified by `harmful`, seeded."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from drpo.nodes.beam import merge_leaders
from drpo.nodes.policy import final_candidate, validated
from drpo.nodes.prepare import harmful_places, stratified_order
from drpo.state.settings import load_settings
from drpo.state.types import (
    AspectScore,
    Candidate,
    Feedback,
    Judgement,
    LevelScore,
    Proposal,
    Query,
    ReviewDecision,
)

START = "You are a helpful assistant."


def _score(candidate_id: str, query_id: str, reward: float) -> LevelScore:
    judgement = Judgement(scores=(AspectScore(aspect="A", score=int(reward)),))
    return LevelScore(
        candidate_id=candidate_id,
        query_id=query_id,
        answer_id=f"{candidate_id}:{query_id}",
        reward=reward,
        feedback=Feedback(query=query_id, answer="a", judgement=judgement),
    )


def _validation_state(rewards: dict[str, tuple[float, ...]], **extra: Any) -> dict[str, Any]:
    candidates = {
        "L2-best": Candidate(id="L2-best", prompt="Be precise.", path_rewards=(4.0, 4.8)),
        "L1-other": Candidate(id="L1-other", prompt="Be kind.", path_rewards=(4.0, 4.1)),
        "baseline": Candidate(id="baseline", prompt=START),
    }
    return {
        "phase": "validate",
        "proposals": [Proposal(candidate=candidates[cid]) for cid in rewards],
        "scores": [
            _score(cid, f"v{i}", r) for cid, values in rewards.items() for i, r in enumerate(values)
        ],
        "reviewed": {},
        "beam": [candidates["L2-best"]],
        "leaders": [candidates["L2-best"], candidates["L1-other"]],
        **extra,
    }


@pytest.fixture
def settings() -> Any:
    return load_settings(overrides={"search": {"initial_prompt": START}})


def test_the_starting_prompt_is_the_pick_when_it_validates_best(settings: Any) -> None:
    state = _validation_state(
        {"L2-best": (3.0, 4.0), "L1-other": (2.0, 3.0), "baseline": (4.0, 5.0)}
    )
    best = final_candidate(state, settings)  # type: ignore[arg-type]
    assert best is not None and best.id == "baseline" and best.prompt == START


def test_a_rewrite_that_validates_better_than_the_start_is_the_pick(settings: Any) -> None:
    state = _validation_state(
        {"L2-best": (3.0, 4.0), "L1-other": (4.0, 5.0), "baseline": (3.0, 3.0)}
    )
    best = final_candidate(state, settings)  # type: ignore[arg-type]
    assert best is not None and best.id == "L1-other"


def test_a_tie_with_the_starting_prompt_is_no_improvement(settings: Any) -> None:
    state = _validation_state({"L2-best": (4.0, 4.0), "baseline": (4.0, 4.0)})
    ranking = validated(state, settings)  # type: ignore[arg-type]
    assert [c.id for c, _ in ranking] == ["baseline", "L2-best"]


def test_a_rejected_starting_prompt_leaves_the_best_rewrite(settings: Any) -> None:
    state = _validation_state(
        {"L2-best": (3.0, 4.0), "baseline": (4.0, 5.0)},
        reviewed={"baseline": ReviewDecision(candidate_id="baseline", decision="reject")},
    )
    best = final_candidate(state, settings)  # type: ignore[arg-type]
    assert best is not None and best.id == "L2-best"


def test_best_seen_ranks_by_the_prompts_own_reward_not_the_path_mean() -> None:
    # "strong-parent" has the higher path mean only because of its ancestors' rewards.
    strong_parent = Candidate(id="strong-parent", prompt="A.", path_rewards=(5.0, 5.0, 2.0))
    own_best = Candidate(id="own-best", prompt="B.", path_rewards=(1.0, 1.0, 4.0))
    merged = merge_leaders([], [strong_parent, own_best], keep=2)
    assert [c.id for c in merged] == ["own-best", "strong-parent"]


# stratified validation


def _queries(harmful: int, benign: int) -> list[Query]:
    return [Query(id=f"h{i}", query=f"harm {i}", harmful=True) for i in range(harmful)] + [
        Query(id=f"b{i}", query=f"benign {i}") for i in range(benign)
    ]


@pytest.mark.parametrize(("harmful", "benign"), [(5, 28), (10, 10), (3, 27), (0, 6), (6, 0)])
def test_every_prefix_holds_the_datas_proportion(harmful: int, benign: int) -> None:
    order = stratified_order(_queries(harmful, benign), seed=7)
    assert Counter(q.id for q in order) == Counter(q.id for q in _queries(harmful, benign))
    total = harmful + benign
    for size in range(1, total + 1):
        placed = sum(q.harmful for q in order[:size])
        assert placed == harmful_places(size, harmful, total)
        # Within rounding (or the one place each kind is owed) of the data's proportion.
        assert abs(placed - size * harmful / total) <= 1.0


def test_two_places_hold_one_harmful_and_one_benign_query() -> None:
    # The shipped validation data is 5 harmful in 33; its first 2 used to be both benign.
    order = stratified_order(_queries(5, 28), seed=0)
    assert sorted(q.harmful for q in order[:2]) == [False, True]
    assert sum(q.harmful for q in order[:4]) == 1
    assert sum(q.harmful for q in order[:20]) == 3


def test_the_order_is_seeded_and_deterministic() -> None:
    queries = _queries(5, 28)
    first = [q.id for q in stratified_order(queries, seed=3)]
    assert first == [q.id for q in stratified_order(list(queries), seed=3)]
    assert first != [q.id for q in stratified_order(queries, seed=4)]


def test_the_shipped_validation_set_used_by_a_run_is_stratified() -> None:
    from drpo.graph.api import load_run_data

    settings = load_settings(overrides={"search": {"validation_size": 4}})
    validation = load_run_data(settings).validation[: settings.search.validation_size]
    assert any(q.harmful for q in validation) and not all(q.harmful for q in validation)


# the retrieval a run used, and the "no better prompt" flag, travel with the run


def _finished_run(tmp_path: Any, **fields: Any) -> Any:
    from drpo.checkpoints.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    settings = load_settings(overrides={"data": {"retrieval": "auto"}}, environ={})
    store.create_run("r1", settings.public_dict(), [])
    store.update_run("r1", status="completed", final_prompt=START, **fields)
    return store


def test_serve_and_eval_use_the_retrieval_the_run_stored(tmp_path: Any) -> None:
    from drpo.graph.inference import AlignedPrompt

    # The settings say "auto"; on this host auto could resolve otherwise: the stored kind wins.
    store = _finished_run(tmp_path, retrieval="bm25", best_candidate_id="baseline")
    assert AlignedPrompt.from_run(store, "r1").retrieval == "bm25"
    store.close()


def test_the_export_says_when_no_better_prompt_was_found(tmp_path: Any) -> None:
    from drpo.graph.export import export_record, render_export

    store = _finished_run(tmp_path, no_better_prompt=1, best_candidate_id="baseline")
    row = store.run("r1")
    assert export_record(store, row)["no_better_prompt_found"] is True
    assert "no better prompt found" in render_export(store, row, "md")
    store.close()
