"""`drpo judge-check`: the shipped set, the stratified subset, and accuracy in both modes."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drpo.cli.app import app
from drpo.cli.judge import pre_search_check
from drpo.evals.judge_check import (
    KINDS,
    PairOutcome,
    accuracy,
    run_judge_check,
    shipped_pairs,
    stratified_subset,
)
from drpo.state.settings import load_settings
from drpo.state.types import AspectScore, Judgement
from tests.support.stub_clients import stub_judge
from tests.support.stub_server import StubRequest, StubServer

PAIRS = shipped_pairs()


def test_the_shipped_set_has_ten_pairs_of_every_kind() -> None:
    counts = Counter(p.kind for p in PAIRS)
    assert len(PAIRS) >= 60 and set(counts) == set(KINDS)
    assert min(counts.values()) >= 10
    assert len({p.id for p in PAIRS}) == len(PAIRS)
    assert all(p.better != p.worse for p in PAIRS)
    assert {p.kind for p in PAIRS if p.harmful} == {"harmful_compliance"}


def test_stratified_subset_spreads_over_the_kinds_and_follows_the_seed() -> None:
    subset = stratified_subset(PAIRS, 12, seed=1)
    assert Counter(p.kind for p in subset) == dict.fromkeys(KINDS, 2)
    assert subset == stratified_subset(PAIRS, 12, seed=1)
    assert subset != stratified_subset(PAIRS, 12, seed=2)
    assert len({p.kind for p in stratified_subset(PAIRS, 6)}) == 6
    assert len(stratified_subset(PAIRS, 1000)) == len(PAIRS)


def _judged(score: int, expected: float | None) -> Judgement:
    return Judgement(scores=(AspectScore(aspect="Helpfulness", score=score, expected=expected),))


def test_probability_mode_separates_what_integers_tie() -> None:
    pair = PAIRS[0]
    outcomes = [
        PairOutcome(pair, _judged(4, 4.4), _judged(4, 3.9)),  # integer tie, probability right
        PairOutcome(pair, _judged(5, 4.6), _judged(3, 3.2)),  # right in both
        PairOutcome(pair, _judged(3, 3.1), _judged(4, 3.8)),  # wrong in both
        PairOutcome(pair, _judged(4, None), _judged(4, 4.0)),  # no probability for one answer
        PairOutcome(pair, Judgement(error="unparsable"), _judged(2, 2.0)),  # unjudged
    ]
    integer, probability = accuracy(outcomes, "integer"), accuracy(outcomes, "probability")
    assert (integer.judged, integer.right, integer.ties) == (4, 1, 2)
    assert (probability.judged, probability.right, probability.ties) == (3, 2, 0)
    assert probability.rate == pytest.approx(2 / 3)
    assert probability.ci is not None and probability.ci[0] <= 2 / 3 <= probability.ci[1]


# ---- end to end against the stub server: a judge that gives every answer a 4 ---------------

BETTER = {p.better for p in PAIRS}


def _answer_of(request: StubRequest) -> str:
    user = request.text_of("user")
    return user.split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]


def _flat_judge(request: StubRequest) -> str:
    schema = request.schema or {}
    names = list(schema["$defs"]["AspectScores"]["required"])
    return json.dumps({"scores": {n: {"rationale": "fine", "score": 4} for n in names}})


def _leaning_logprobs(request: StubRequest, text: str) -> list[dict[str, Any]]:
    """Single-character tokens; at each score, 4 with some mass on 5 (better) or 3 (worse)."""
    other = "5" if _answer_of(request) in BETTER else "3"
    tokens = []
    for index, char in enumerate(text):
        tops = [{"token": char, "logprob": 0.0}]
        if char == "4" and text[:index].rstrip().endswith('"score":'):
            tops = [
                {"token": "4", "logprob": math.log(0.7)},
                {"token": other, "logprob": math.log(0.3)},
            ]
        tokens.append({"token": char, "logprob": tops[0]["logprob"], "top_logprobs": tops})
    return tokens


def test_check_through_the_endpoint_integer_ties_probability_right() -> None:
    subset = stratified_subset(PAIRS, 6)
    with StubServer(_flat_judge, logprobs=_leaning_logprobs) as stub:
        judge = stub_judge(stub.base_url)
        report = asyncio.run(run_judge_check(judge, subset, concurrency=2))
        assert stub.count("Judgement") == 12  # both answers of every pair, once each
    assert report.overall("integer").tie_rate == 1.0
    assert report.overall("probability").rate == 1.0
    assert report.headline_mode == "probability" and not report.near_chance()
    assert set(report.by_kind("probability")) == set(KINDS)


def test_cli_prints_both_modes_and_warns_near_chance(tmp_path: Path) -> None:
    with StubServer(_flat_judge) as stub:  # no logprobs: integer mode only, all ties
        result = CliRunner().invoke(
            app,
            [
                "judge-check",
                "--size",
                "6",
                "--set",
                f"judge.endpoint={stub.base_url}",
                "--set",
                "judge.model=stub-model",
                "--set",
                "judge.provider=llamacpp",
                "--set",
                f"store={tmp_path / 'runs.db'}",
            ],
            env={"COLUMNS": "200"},
        )
    assert result.exit_code == 0, result.output
    assert "integer accuracy" in result.output and "probability accuracy" in result.output
    assert "0% [0%, 0%] (0/6)" in result.output
    assert "integer scores only" in result.output
    assert "near chance" in result.output


@pytest.mark.parametrize("size", ["0", "61", "x"])
def test_bad_size_is_one_line_and_exit_2(size: str, tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    result = CliRunner().invoke(app, ["judge-check", "--size", size, "--set", f"store={store}"])
    assert result.exit_code == 2
    assert not store.exists()


def test_optimize_pre_check_warns_near_chance(tmp_path: Path, capsys: Any) -> None:
    settings = load_settings(
        overrides={
            "judge": {
                "endpoint": "http://127.0.0.1:1",
                "model": "stub-model",
                "provider": "llamacpp",
            },
            "store": str(tmp_path / "runs.db"),
        },
        environ={},
    )
    with StubServer(_flat_judge, logprobs=_leaning_logprobs) as stub:
        judge = settings.judge.model_copy(update={"endpoint": stub.base_url})
        pre_search_check(settings.model_copy(update={"judge": judge}), 6)
    printed = capsys.readouterr().err
    assert "judge-check (probability scores): 100%" in printed and "near chance" not in printed
    with StubServer(_flat_judge) as stub:
        judge = settings.judge.model_copy(update={"endpoint": stub.base_url})
        pre_search_check(settings.model_copy(update={"judge": judge}), 6)
    printed = capsys.readouterr().err
    assert "judge-check (integer scores): 0%" in printed and "near chance" in printed


def test_kind_judges_only_that_kind(tmp_path: Path) -> None:
    with StubServer(_flat_judge) as stub:
        result = CliRunner().invoke(
            app,
            [
                "judge-check",
                "--kind",
                "padding",
                "--kind",
                "cutoff",
                "--set",
                f"judge.endpoint={stub.base_url}",
                "--set",
                "judge.model=stub-model",
                "--set",
                "judge.provider=llamacpp",
                "--set",
                f"store={tmp_path / 'runs.db'}",
            ],
            env={"COLUMNS": "200"},
        )
        judged = stub.count("Judgement")
    assert result.exit_code == 0, result.output
    assert judged == 40  # the 20 pairs of the two kinds, both answers
    assert "padding" in result.output and "cutoff" in result.output
    assert "factual" not in result.output and "harmful" not in result.output


def test_unknown_kind_is_one_line_and_exit_2(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    args = ["judge-check", "--kind", "rudeness", "--set", f"store={store}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "error: --kind must be one of" in result.output
    assert not store.exists()
