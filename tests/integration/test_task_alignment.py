"""Aligning for a task: an own rubric, reference answers and a programmatic metric, end to end.

Runs the compiled graph against the stub server. The scripted base model answers
"PROMPT[...] answer to: <query>", so a query that contains its reference answer is answered
"correctly" by `task_metrics:mentions_reference` and one that does not is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scripted_llm import ScriptedLLM
from stub_server import StubServer

from drpo.checkpoints.store import METRIC_ASPECT, RunStore
from drpo.graph.api import RunError, RunPaused, load_run_data, optimize, resume
from drpo.nodes.estimate import estimate_run
from drpo.state.settings import Settings

pytestmark = pytest.mark.integration
DRPO = [sys.executable, "-m", "drpo.cli.app"]
SUPPORT = Path(__file__).resolve().parents[1] / "support"

TRAIN = [
    {"id": "t1", "query": "Name the fruit: apple.", "answer": "apple"},
    {"id": "t2", "query": "What is the capital of France?", "answer": "Paris"},
    {"id": "t3", "query": "Spell the colour red.", "reference": "red", "category": "coding"},
]
VALIDATION = [
    {"id": "v1", "query": "Which planet is called blue: Earth.", "answer": "Earth"},
    {"id": "v2", "query": "Largest ocean?", "answer": "Pacific"},
]
RUBRIC = """
mode = "replace"
[[aspects]]
name = "Correctness"
definition = "Agrees with the reference answer."
weight = {weight}
applies = "always"
[[aspects]]
name = "Brevity"
definition = "One short line."
applies = {{ categories = ["coding"] }}
[[aspects]]
name = "Clarity"
definition = "Easy to follow."
"""
SCHEDULE: dict[str, Any] = {
    "search": {"width": 2, "actions": 2, "depth": 1, "batch_size": 2, "validation_size": 2},
    "examples": {"enabled": True, "rounds": 1, "limit": 2},
}


def _task_files(folder: Path) -> dict[str, str]:
    for name, rows in (("train", TRAIN), ("validation", VALIDATION)):
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{name}.jsonl").write_text(text, encoding="utf-8")
    return {"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl")}


def _rows(settings: Settings, sql: str, *args: Any) -> list[dict[str, Any]]:
    store = RunStore(settings.store)
    try:
        return [dict(r) for r in store.db.query(sql, args)]
    finally:
        store.close()


def test_a_metric_only_search_makes_no_selector_or_judge_call(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(
        **SCHEDULE,
        data=_task_files(tmp_path),
        rewards={"llm_aspects": False, "metric": "task_metrics:mentions_reference"},
    )
    result = optimize(settings)
    assert result.status == "completed"
    assert stub.count("AspectChoice", "Judgement", "ExampleRewrite") == 0
    forecast = estimate_run(settings, load_run_data(settings)).roles
    assert forecast["selector"].calls == forecast["judge"].calls == 0
    assert forecast["base"].calls >= stub.count("base")
    assert stub.count("base") > 0 and stub.count("PromptProposal") > 0
    judged = _rows(
        settings,
        "select j.aspect, j.score, j.rationale, a.reward, a.query_id from judgements j "
        "join answers a on a.run_id = j.run_id and a.id = j.answer_id where j.run_id = ?",
        result.run_id,
    )
    assert judged and {row["aspect"] for row in judged} == {METRIC_ASPECT}
    for row in judged:
        # The reward is the metric alone, on the judge's 1–5 scale.
        assert row["reward"] == pytest.approx(1 + 4 * row["score"])
    hits = {row["query_id"]: row["score"] for row in judged}
    assert hits["v1"] == 1 and hits["v2"] == 0  # "Earth" is in its query, "Pacific" is not
    # The metric's reason is the optimizer's feedback, as a judge's rationale would be.
    proposals = [c.body["messages"][-1]["content"] for c in stub.calls("PromptProposal")]
    assert any("- Metric mentions_reference:" in text and "expected" in text for text in proposals)
    assert result.validation_value is not None


def test_a_rubric_and_references_shape_every_judgement(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(RUBRIC.format(weight=3), encoding="utf-8")
    settings = make_settings(
        **SCHEDULE, data=_task_files(tmp_path), rewards={"rubric": str(rubric)}
    )
    result = optimize(settings)
    # The selector is offered only the rubric's selectable aspect.
    for call in stub.calls("AspectChoice"):
        system = call.body["messages"][0]["content"]
        assert "- Clarity: Easy to follow." in system and "Helpfulness" not in system
    references = {row["query"]: row.get("answer") or row.get("reference") for row in TRAIN}
    references |= {row["query"]: row["answer"] for row in VALIDATION}
    graded = 0
    for call in stub.calls("Judgement"):
        schema = call.body["response_format"]["json_schema"]["schema"]
        names = set(schema["$defs"]["AspectScores"]["required"])
        assert "Correctness" in names  # `always`
        assert "Helpfulness" not in names  # not in the rubric, though the selector named it
        user = call.body["messages"][-1]["content"]
        query = user.split("<query>\n", 1)[1].split("\n</query>", 1)[0]
        if query == "Spell the colour red.":
            assert "Brevity" in names  # its category's aspect
        if query in references:
            assert user.startswith(f"<reference>\n{references[query]}\n</reference>")
            graded += 1
    assert graded >= len(VALIDATION)
    stored = _rows(settings, "select rubric from runs where id = ?", result.run_id)[0]
    assert json.loads(stored["rubric"])["aspects"][0]["weight"] == 3


def test_the_rubric_hash_keys_cached_replies(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Weights are not in the judge's prompt, so only the rubric's hash keeps replies apart."""
    stub.set_responder(ScriptedLLM())
    data = _task_files(tmp_path)

    def run(weight: int) -> int:
        rubric = tmp_path / f"rubric-{weight}.toml"
        rubric.write_text(RUBRIC.format(weight=weight), encoding="utf-8")
        settings = make_settings(**SCHEDULE, data=data, rewards={"rubric": str(rubric)})
        run_id = optimize(settings).run_id
        hits = _rows(
            settings,
            "select count(*) as n from llm_calls where run_id = ? and role = 'judge' "
            "and outcome = 'cache_hit'",
            run_id,
        )
        return int(hits[0]["n"])

    assert run(1) == 0
    assert run(2) == 0  # another rubric: nothing replayed from the first run
    assert run(1) > 0  # the first rubric again: its replies are reused


def test_a_metric_returning_nan_is_a_missing_score_and_the_run_goes_on(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(
        **SCHEDULE, data=_task_files(tmp_path), rewards={"metric": "task_metrics:not_a_number"}
    )
    result = optimize(settings)
    assert result.status == "completed"
    rows = _rows(
        settings,
        "select j.score, j.error, a.reward from judgements j join answers a "
        "on a.run_id = j.run_id and a.id = j.answer_id where j.run_id = ? and j.aspect = ?",
        result.run_id,
        METRIC_ASPECT,
    )
    assert rows
    for row in rows:
        assert row["score"] is None and "returned NaN" in row["error"]
        assert row["reward"] is not None  # the judge's aspects still score the answer


def test_resume_reimports_the_metric_and_asks_again_for_a_bare_callable(
    stub: StubServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stub.set_responder(ScriptedLLM())
    data = _task_files(tmp_path)
    scored: list[str] = []

    def local_metric(query: str, answer: str, reference: str | None) -> float:
        scored.append(query)
        return 1.0

    settings = make_settings(**SCHEDULE, data=data, budget={"calls": 6})
    with pytest.raises(RunPaused) as paused:
        optimize(settings, metric=local_metric)
    run_id = paused.value.run_id
    with pytest.raises(RunError, match=r"Python callable .*local_metric.* no import path"):
        resume(run_id, store_path=settings.store, budget={"calls": 500})
    result = resume(run_id, store_path=settings.store, budget={"calls": 500}, metric=local_metric)
    assert result.status == "completed" and scored

    imported = make_settings(
        **SCHEDULE,
        data=data,
        budget={"calls": 6},
        store=str(tmp_path / "second.db"),
        rewards={"llm_aspects": False, "metric": "task_metrics:half"},
    )
    with pytest.raises(RunPaused) as paused:
        optimize(imported)
    result = resume(paused.value.run_id, store_path=imported.store, budget={"calls": 500})
    assert result.status == "completed"
    assert result.validation_value == pytest.approx(3.0)  # 0.5 on the 1–5 scale


BAD_RUBRICS = {
    "duplicate names": (
        '[[aspects]]\nname = "A"\ndefinition = "a"\n[[aspects]]\nname = "A"\ndefinition = "b"\n',
        "duplicate aspect name 'A'",
    ),
    "negative weight": (
        '[[aspects]]\nname = "A"\ndefinition = "a"\nweight = -2\n',
        "aspect 'A' weight: Input should be greater than or equal to 0",
    ),
    "unknown applies": (
        '[[aspects]]\nname = "A"\ndefinition = "a"\napplies = "weekends"\n',
        "aspect 'A': 'applies' must be",
    ),
}


def _drpo_optimize(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    return subprocess.run(
        [
            *DRPO,
            "optimize",
            "--endpoint",
            url,
            "--model",
            "stub-model",
            "--store",
            str(tmp_path / "store" / "runs.db"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )


def _assert_rejected(done: subprocess.CompletedProcess[str], expected: str, tmp: Path) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert expected in lines[0]
    assert not (tmp / "store").exists(), "a rejected run must not write anything"


@pytest.mark.parametrize("case", sorted(BAD_RUBRICS))
def test_a_bad_rubric_is_refused_before_anything_is_written(
    case: str, tmp_path: Path, stub: StubServer
) -> None:
    text, expected = BAD_RUBRICS[case]
    (tmp_path / "rubric.toml").write_text(text, encoding="utf-8")
    done = _drpo_optimize(tmp_path, stub.base_url, "--rubric", "rubric.toml")
    _assert_rejected(done, expected, tmp_path)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("no_such_metrics:exact", "metric 'no_such_metrics:exact' cannot be imported"),
        ("task_metrics:missing", "module 'task_metrics' has no 'missing'"),
        (
            "task_metrics",
            "invalid setting 'rewards.metric': Value error, must be 'module:function'",
        ),
    ],
)
def test_a_metric_that_cannot_be_imported_is_refused(
    metric: str, expected: str, tmp_path: Path, stub: StubServer
) -> None:
    done = _drpo_optimize(tmp_path, stub.base_url, "--metric", metric)
    _assert_rejected(done, expected, tmp_path)


def test_metric_only_without_a_metric_is_refused(tmp_path: Path, stub: StubServer) -> None:
    done = _drpo_optimize(tmp_path, stub.base_url, "--set", "rewards.llm_aspects=false")
    _assert_rejected(done, "rewards.llm_aspects = false needs a metric", tmp_path)
