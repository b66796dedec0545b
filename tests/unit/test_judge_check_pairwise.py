"""`drpo judge-check`'s pairwise section: both orders, position consistency, probability mode."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from drpo.cli.app import app
from drpo.evals.harness import PairReading, _compare_all, _Silent
from drpo.evals.judge_check import (
    KINDS,
    PairwiseOutcome,
    PairwiseReport,
    run_pairwise_check,
    shipped_pairs,
    stratified_subset,
)
from drpo.prompts.judge import fence
from drpo.state.types import Query
from tests.support.stub_clients import stub_judge
from tests.support.stub_server import LogprobsScript, StubRequest, StubServer

PAIRS = shipped_pairs()
SUBSET = stratified_subset(PAIRS, 6)
BETTER = {fence(p.better) for p in PAIRS}


def _shown(request: StubRequest, tag: str) -> str:
    return request.text_of("user").split(f"<{tag}>\n", 1)[1].split(f"\n</{tag}>", 1)[0]


def _better_letter(request: StubRequest) -> str:
    return "A" if _shown(request, "answer_a") in BETTER else "B"


def _first_always(request: StubRequest) -> str:
    return json.dumps({"rationale": "The first one is better.", "verdict": "A"})


def _always_right(request: StubRequest) -> str:
    return json.dumps({"rationale": "One is better.", "verdict": _better_letter(request)})


def _verdict_logprobs(chance: Callable[[StubRequest], dict[str, float]]) -> LogprobsScript:
    """Single-character tokens; at the verdict's letter, the alternatives `chance` gives."""

    def script(request: StubRequest, text: str) -> list[dict[str, Any]]:
        tokens = []
        for index, char in enumerate(text):
            tops = [{"token": char, "logprob": 0.0}]
            if text[:index].endswith('"verdict": "'):
                odds = chance(request)
                tops = [{"token": t, "logprob": math.log(p)} for t, p in odds.items()]
                tokens.append(
                    {"token": char, "logprob": math.log(odds[char]), "top_logprobs": tops}
                )
                continue
            tokens.append({"token": char, "logprob": 0.0, "top_logprobs": tops})
        return tokens

    return script


# The first-position judge is fairly sure of "A" whatever it is shown; the right one of the
# better answer's letter.
FIRST_LEANING = _verdict_logprobs(lambda request: {"A": 0.8, "B": 0.15, "tie": 0.05})
RIGHT_LEANING = _verdict_logprobs(
    lambda request: {"A": 0.9, "B": 0.1} if _better_letter(request) == "A" else {"B": 0.9, "A": 0.1}
)


def _check(responder: Any, logprobs: LogprobsScript | None) -> tuple[PairwiseReport, int]:
    with StubServer(responder, logprobs=logprobs) as stub:
        judge = stub_judge(stub.base_url)
        report = asyncio.run(run_pairwise_check(judge, SUBSET, concurrency=2))
        return report, stub.count("PairVerdict")


def test_a_judge_that_always_prefers_the_first_answer_is_at_chance() -> None:
    report, calls = _check(_first_always, FIRST_LEANING)
    assert calls == 12  # every pair in both orders
    for mode in ("integer", "probability"):
        overall = report.overall(mode)
        assert (overall.judged, overall.right, overall.ties) == (6, 0, 6)
        assert overall.rate == pytest.approx(0.5)  # not 100 %: the orders cancel
    position = report.position()
    assert position.consistency == 0.0 and position.first_rate == 1.0
    assert report.mean_first_probability() == pytest.approx(0.8 + 0.05 / 2)
    assert not report.fallbacks


def test_a_judge_that_is_always_right_scores_full_marks_and_full_consistency() -> None:
    report, _ = _check(_always_right, RIGHT_LEANING)
    for mode in ("integer", "probability"):
        assert report.overall(mode).rate == 1.0 and report.overall(mode).ties == 0
        assert set(report.by_kind(mode)) == set(KINDS)
    position = report.position()
    assert position.consistency == 1.0 and position.first_rate == 0.5
    assert report.mean_first_probability() == pytest.approx(0.5)
    assert report.headline_mode == "probability"


MALFORMED: list[LogprobsScript | None] = [
    None,  # the endpoint sends none
    lambda request, text: [{"token": "{", "logprob": "bad"}],  # a payload that does not parse
    lambda request, text: [  # tokens of another reply than the one parsed: the other letter
        {"token": c, "logprob": 0.0, "top_logprobs": [{"token": c, "logprob": 0.0}]}
        for c in text.translate(str.maketrans("AB", "BA"))
    ],
]


@pytest.mark.parametrize("logprobs", MALFORMED)
def test_missing_or_malformed_logprobs_leave_integer_mode(logprobs: LogprobsScript | None) -> None:
    report, _ = _check(_always_right, logprobs)
    assert report.overall("probability").judged == 0
    assert report.overall("integer").rate == 1.0
    assert report.headline_mode == "integer"
    assert len(report.fallbacks) == 12 and len(set(report.fallbacks)) == 1


def test_probability_mode_separates_what_verdict_letters_tie() -> None:
    pair = PAIRS[0]
    # Both orders say "A": a tie in letters, but the better answer's "A" was surer.
    outcome = PairwiseOutcome(pair, PairReading("A", 0.9), PairReading("A", 0.6))
    assert outcome.verdict("integer") == "tie"
    assert outcome.better_score("probability") == pytest.approx((0.9 + 0.4) / 2)
    assert outcome.verdict("probability") == "right"
    half = PairwiseOutcome(pair, PairReading("A", 0.7), PairReading(None, None, error="bad"))
    assert half.verdict("integer") is None and half.verdict("probability") is None


def _cli(stub: StubServer, tmp_path: Path, *extra: str) -> Any:
    args = ["judge-check", "--size", "6", *extra]
    for setting in (
        f"judge.endpoint={stub.base_url}",
        "judge.model=stub-model",
        "judge.provider=llamacpp",
        f"store={tmp_path / 'runs.db'}",
    ):
        args += ["--set", setting]
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def _absolute_or_first(request: StubRequest) -> str:
    if request.role == "PairVerdict":
        return _first_always(request)
    names = list((request.schema or {})["$defs"]["AspectScores"]["required"])
    return json.dumps({"scores": {n: {"rationale": "fine", "score": 4} for n in names}})


def test_cli_both_methods_print_both_sections_and_the_position_bias(tmp_path: Path) -> None:
    with StubServer(_absolute_or_first) as stub:  # no logprobs: integer mode with one warning
        result = _cli(stub, tmp_path)
        calls = (stub.count("Judgement"), stub.count("PairVerdict"))
    assert result.exit_code == 0, result.output
    assert calls == (12, 12)
    assert "judge-check, absolute" in result.output and "judge-check, pairwise" in result.output
    assert "50% [50%, 50%] (0 right, 6 tied, of 6)" in result.output
    assert "Position consistency 0% (0/6 pairs" in result.output
    assert "first-shown answer picked in 100% of 12 decisive verdicts" in result.output
    assert result.output.count("have no probability") == 1
    assert "the pairwise judge is near chance" in result.output


def test_cli_pairwise_only_makes_no_absolute_call(tmp_path: Path) -> None:
    with StubServer(_absolute_or_first, logprobs=FIRST_LEANING) as stub:
        result = _cli(stub, tmp_path, "--method", "pairwise")
        calls = (stub.count("Judgement"), stub.count("PairVerdict"))
    assert result.exit_code == 0, result.output
    assert calls == (0, 12)
    assert "judge-check, absolute" not in result.output
    assert "have no probability" not in result.output


def test_unknown_method_is_one_line_and_exit_2(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    args = ["judge-check", "--method", "listwise", "--set", f"store={store}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "error: --method must be one of" in result.output
    assert not store.exists()


class _Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def pair(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def test_eval_and_judge_check_send_the_same_pairwise_requests() -> None:
    pair = SUBSET[0]
    plan = SimpleNamespace(pairs=[("good", "bad")], queries=[Query(id="q", query=pair.query)])
    answers = {"good:q": pair.better, "bad:q": pair.worse}
    with StubServer(_first_always, logprobs=FIRST_LEANING) as stub:
        judge = stub_judge(stub.base_url)
        recorder = _Recorder()

        async def both() -> None:  # one event loop: the client's connections belong to it
            await run_pairwise_check(judge, [pair], concurrency=1)
            await _compare_all(
                plan,  # type: ignore[arg-type]
                {"judge": judge},  # type: ignore[arg-type]
                recorder,  # type: ignore[arg-type]
                _Silent(),
                asyncio.Semaphore(1),
                answers,
                "stub-model",
                stub.base_url,
            )

        asyncio.run(both())
        bodies = [json.dumps(c.body, sort_keys=True) for c in stub.calls("PairVerdict")]
    check, evaluation = bodies[:2], bodies[2:]
    assert len(check) == len(evaluation) == 2
    assert sorted(check) == sorted(evaluation)  # byte-identical, both orders
    assert [r["first_probability"] for r in recorder.rows] == [pytest.approx(0.825)] * 2
