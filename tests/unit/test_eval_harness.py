"""The evaluation harness with scripted role clients: rows, missing scores, interruption."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from drpo.backends.errors import StructuredOutputError
from drpo.backends.llm import ScoredReply
from drpo.checkpoints.store import RunStore
from drpo.evals.conditions import Condition
from drpo.evals.harness import EvalPlan, run_evaluation
from drpo.evals.records import EvalRecorder
from drpo.evals.summary import summarize
from drpo.graph.inference import AlignedPrompt
from drpo.prompts.base import BasePrompt
from drpo.state.settings import load_settings
from drpo.state.types import Query


class Stopped(BaseException):
    """Stands in for Ctrl-C or SIGTERM (a real KeyboardInterrupt would also stop pytest)."""


class ScriptedRole:
    """A role client whose replies come from a script; running out of script fails loudly."""

    def __init__(self, fail_on: str | None = None, interrupt: bool = False) -> None:
        self.fail_on = fail_on
        self.interrupt = interrupt
        self.calls: list[str] = []
        self.gives_logprobs = False

    async def structured_with_logprobs(
        self, system: str, user: str, schema: type[BaseModel], *, tag: str = "", **_: Any
    ) -> ScoredReply[BaseModel]:
        (reply,) = await self.structured(system, user, schema, tag=tag)
        return ScoredReply(reply)

    async def text(self, prompt: BasePrompt, *, tag: str = "", **_: Any) -> list[str]:
        self.calls.append(tag)
        if self.interrupt:
            raise Stopped
        return [f"{prompt.system.split('.')[0]} says hi to {prompt.user}"]

    async def structured(
        self, system: str, user: str, schema: type[BaseModel], *, tag: str = "", **_: Any
    ) -> list[BaseModel]:
        self.calls.append(tag)
        await asyncio.sleep(0)
        if self.fail_on and self.fail_on in user:
            raise StructuredOutputError("judge", "no valid reply after 3 tries: scripted")
        if schema.__name__ == "PairVerdict":
            verdict = "A" if "<answer_a>\nCareful" in user else "B"
            return [schema.model_validate({"rationale": "r", "verdict": verdict})]
        names = list(schema.model_json_schema()["$defs"]["AspectScores"]["properties"])
        score = 4 if "Careful" in user.split("<answer>")[1] else 2
        return [
            schema.model_validate(
                {"scores": {n: {"rationale": "r", "score": score} for n in names}}
            )
        ]


def plan(tmp_path: Path) -> EvalPlan:
    settings = load_settings(overrides={"store": str(tmp_path / "runs.db")}, environ={})
    return EvalPlan(
        eval_id="eval-test",
        settings=settings,
        conditions=[
            Condition("plain", AlignedPrompt("Plain.", (), 0, "chat", "bm25"), "built-in"),
            Condition("careful", AlignedPrompt("Careful.", (), 0, "chat", "bm25"), "test"),
        ],
        queries=[
            Query(id="q1", query="What is rain?"),
            Query(id="q2", query="Make a weapon.", harmful=True, category="harmful"),
            Query(id="q3", query="Unjudgeable question"),
        ],
        pairs=[("careful", "plain")],
    )


def test_rows_scores_and_pairs_with_a_missing_judgement(tmp_path: Path) -> None:
    the_plan = plan(tmp_path)
    base, judge = ScriptedRole(), ScriptedRole(fail_on="Unjudgeable")
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": base, "judge": judge}
    asyncio.run(run_evaluation(the_plan, models, EvalRecorder(store, "eval-test")))
    assert len(base.calls) == 6
    assert len(judge.calls) == 6 + 3 * 2  # absolute for every answer, pairwise in both orders
    summary = summarize(store, "eval-test")
    assert summary.status == "completed"
    plain, careful = summary.conditions
    assert careful.aspects["Helpfulness"].mean == 4.0 and plain.aspects["Helpfulness"].mean == 2.0
    assert careful.aspects["Helpfulness"].missing == 1  # q3: missing, not a 0 in the mean
    assert careful.aspects["Safety"].judged == 1 and "Safety" not in {
        s["aspect"] for s in store.db["eval_scores"].rows_where("query_id = 'q1'")
    }
    (pair,) = summary.pairs
    assert pair.result.rate == 1.0 and pair.result.missing == 1
    row = store.db["eval_runs"].get("eval-test")
    assert json.loads(row["pairs"]) == [["careful", "plain"]]


def test_an_interrupted_evaluation_is_marked_as_such(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": ScriptedRole(interrupt=True), "judge": ScriptedRole()}
    with pytest.raises(Stopped):
        asyncio.run(run_evaluation(plan(tmp_path), models, EvalRecorder(store, "eval-test")))
    row = store.db["eval_runs"].get("eval-test")
    assert row["status"] == "interrupted" and "Stopped" in row["error"]


class FirstLeaningJudge(ScriptedRole):
    """Always answers "A" (a pure position bias), but with more confidence when Careful is A."""

    def __init__(self) -> None:
        super().__init__()
        self.gives_logprobs = True

    async def structured_with_logprobs(
        self, system: str, user: str, schema: type[BaseModel], *, tag: str = "", **_: Any
    ) -> ScoredReply[BaseModel]:
        (reply,) = await self.structured(system, user, schema, tag=tag)
        if schema.__name__ != "PairVerdict":
            return ScoredReply(reply)
        reply = schema.model_validate({"rationale": "r", "verdict": "A"})
        first = 0.9 if "<answer_a>\nCareful" in user else 0.6
        tokens = [
            {"token": '{"rationale": "r", "verdict": "', "logprob": 0.0, "top_logprobs": []},
            {
                "token": "A",
                "logprob": math.log(first),
                "top_logprobs": [
                    {"token": "A", "logprob": math.log(first)},
                    {"token": "B", "logprob": math.log(1 - first)},
                ],
            },
            {"token": '"}', "logprob": 0.0, "top_logprobs": []},
        ]
        return ScoredReply(reply, tokens)


def test_pairwise_win_rate_uses_preference_probabilities(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": ScriptedRole(), "judge": FirstLeaningJudge()}
    asyncio.run(run_evaluation(plan(tmp_path), models, EvalRecorder(store, "eval-test")))
    (pair,) = summarize(store, "eval-test").pairs
    # Verdicts alone are "A" in both orders: a tie on every query. The probabilities keep
    # Careful's edge: (0.9 + (1 - 0.6)) / 2 on each query.
    assert pair.scoring == "probability"
    assert pair.result.rate == pytest.approx(0.65)
    assert pair.position.first_rate == 1.0
    rows = list(store.db["eval_pairs"].rows_where("query_id = 'q1'", order_by="shown_order"))
    assert [r["first_probability"] for r in rows] == pytest.approx([0.9, 0.6])


class RecordingJudge(ScriptedRole):
    """Keeps each absolute judge prompt, to see what the judge was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.users: list[str] = []

    async def structured(
        self, system: str, user: str, schema: type[BaseModel], *, tag: str = "", **_: Any
    ) -> list[BaseModel]:
        if schema.__name__ != "PairVerdict":
            self.users.append(user)
        return await super().structured(system, user, schema, tag=tag)


def test_queries_with_a_reference_are_graded_against_it(tmp_path: Path) -> None:
    the_plan = plan(tmp_path)
    the_plan.queries = [
        Query(id="q1", query="What is rain?", reference="Water falling from clouds."),
        Query(id="q2", query="What is snow?"),
    ]
    the_plan.pairs = []
    judge = RecordingJudge()
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": ScriptedRole(), "judge": judge}
    asyncio.run(run_evaluation(the_plan, models, EvalRecorder(store, "eval-test")))
    guided = [u for u in judge.users if "What is rain?" in u]
    plain = [u for u in judge.users if "What is snow?" in u]
    assert guided and all(
        u.startswith("<reference>\nWater falling from clouds.\n</reference>") for u in guided
    )
    assert plain and not any("<reference>" in u for u in plain)
    templates = {row["query_id"]: row["template"] for row in store.db["eval_scores"].rows}
    assert templates == {"q1": "eval_judge_absolute_reference", "q2": "eval_judge_absolute"}


class ConfidentJudge(ScriptedRole):
    """Absolute scores with token logprobs: the integer 4 (or 2) with P = 0.6, the rest on 5 (1).

    With `spoil` the logprobs spell another digit than the parsed reply: unusable.
    """

    def __init__(self, spoil: bool = False) -> None:
        super().__init__()
        self.gives_logprobs = True
        self.spoil = spoil

    async def structured_with_logprobs(
        self, system: str, user: str, schema: type[BaseModel], *, tag: str = "", **_: Any
    ) -> ScoredReply[BaseModel]:
        (reply,) = await self.structured(system, user, schema, tag=tag)
        if schema.__name__ == "PairVerdict":
            return ScoredReply(reply)
        text = reply.model_dump_json()
        tokens: list[dict[str, Any]] = []
        start = 0
        for name, verdict in reply.model_dump()["scores"].items():
            digit = str(verdict["score"])
            at = text.index('"score":', text.index(f'"{name}"')) + len('"score":')
            other = "5" if digit == "4" else "1"
            shown = other if self.spoil else digit
            tokens.append({"token": text[start:at], "logprob": 0.0, "top_logprobs": []})
            tokens.append(
                {
                    "token": shown,
                    "logprob": math.log(0.6),
                    "top_logprobs": [
                        {"token": digit, "logprob": math.log(0.6)},
                        {"token": other, "logprob": math.log(0.4)},
                    ],
                }
            )
            start = at + 1
        tokens.append({"token": text[start:], "logprob": 0.0, "top_logprobs": []})
        return ScoredReply(reply, tokens)


def test_absolute_scores_are_probability_weighted_where_logprobs_fit(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": ScriptedRole(), "judge": ConfidentJudge()}
    asyncio.run(run_evaluation(plan(tmp_path), models, EvalRecorder(store, "eval-test")))
    summary = summarize(store, "eval-test")
    assert summary.absolute_scoring == "probability"
    plain, careful = summary.conditions
    # 0.6 × 4 + 0.4 × 5 and 0.6 × 2 + 0.4 × 1, not the integers 4 and 2.
    assert careful.aspects["Helpfulness"].mean == pytest.approx(4.4)
    assert plain.aspects["Helpfulness"].mean == pytest.approx(1.6)
    row = next(store.db["eval_scores"].rows_where("answer_id = 'careful:q1'", limit=1))
    assert row["score"] == 4 and row["expected"] == pytest.approx(4.4)
    assert store.db["eval_runs"].get("eval-test")["absolute_fallback"] is None


def test_unusable_logprobs_fall_back_to_integer_scores_with_the_reason(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": ScriptedRole(), "judge": ConfidentJudge(spoil=True)}
    asyncio.run(run_evaluation(plan(tmp_path), models, EvalRecorder(store, "eval-test")))
    summary = summarize(store, "eval-test")
    assert summary.absolute_scoring == "integer"
    assert summary.conditions[1].aspects["Helpfulness"].mean == 4.0
    assert "do not spell" in store.db["eval_runs"].get("eval-test")["absolute_fallback"]


def test_pairwise_only_compares_without_scoring_each_answer(tmp_path: Path) -> None:
    the_plan = plan(tmp_path)
    the_plan.metrics = ("pairwise",)
    judge = ScriptedRole()
    store = RunStore(tmp_path / "runs.db")
    models: Any = {"base": ScriptedRole(), "judge": judge}
    asyncio.run(run_evaluation(the_plan, models, EvalRecorder(store, "eval-test")))
    assert all(tag.startswith("eval:pair:") for tag in judge.calls) and len(judge.calls) == 6
    summary = summarize(store, "eval-test")
    assert summary.conditions[1].aspects == {} and summary.pairs[0].result.rate == 1.0
