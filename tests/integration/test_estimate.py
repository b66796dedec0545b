"""The pre-run estimate: its call counts per role match what a scripted run actually makes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_drpo
from scripted_llm import ScriptedLLM
from stub_server import StubError, StubRequest, StubServer

from drpo.graph.api import load_run_data, optimize
from drpo.nodes.estimate import estimate_run
from drpo.state.settings import ROLES, Settings

pytestmark = pytest.mark.integration

STUB_ROLE = {
    "base": "base",
    "AspectChoice": "selector",
    "Judgement": "judge",
    "PromptProposal": "optimizer",
    "ExampleRewrite": "optimizer",
}
SEARCH = {"width": 2, "actions": 3, "depth": 3, "batch_size": 2, "validation_size": 2}


class SeededChoices(ScriptedLLM):
    """Without `n`, each choice is its own request with seed + index: reply by that index."""

    def __call__(self, request: StubRequest) -> str | StubError:
        if request.n == 1:
            request = replace(request, choice_index=int(request.body.get("seed") or 0))
        return super().__call__(request)


def served(stub: StubServer) -> dict[str, int]:
    counts = Counter(STUB_ROLE[c.role] for c in stub.requests if c.role in STUB_ROLE)
    return {role: counts[role] for role in ROLES}


def estimated(settings: Settings) -> dict[str, int]:
    estimate = estimate_run(settings, load_run_data(settings))
    return {role: estimate.roles[role].calls for role in ROLES}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"search": SEARCH, "examples": {"rounds": 1, "limit": 3}}, id="all-stages"),
        pytest.param(
            {
                "search": {**SEARCH, "depth": 2, "finalists": 4},
                "examples": {"rounds": 1, "limit": 2, "beam_width": 2},
                "optimizer": {"supports_n": False},
            },
            id="one-request-per-choice",
        ),
        pytest.param(
            {"search": {**SEARCH, "validation_size": 0}, "examples": {"enabled": False}},
            id="no-stage-a-no-validation",
        ),
    ],
)
def test_estimated_calls_per_role_equal_the_calls_a_scripted_run_makes(
    overrides: dict[str, Any], stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(SeededChoices())
    settings = make_settings(**overrides)
    expected = estimated(settings)
    result = optimize(settings)
    assert result.status == "completed"
    assert served(stub) == expected


def test_with_the_skip_rule_the_estimate_is_a_maximum(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM(scores={"root": 2, "a0": 3, "a1": 5, "a2": 2}))
    settings = make_settings(
        search={**SEARCH, "skip_threshold": 4.5, "max_extension": 2}, examples={"enabled": False}
    )
    expected = estimated(settings)
    optimize(settings)
    actual = served(stub)
    assert all(actual[role] <= expected[role] for role in ROLES), (actual, expected)
    assert actual != expected  # carried prompts skipped optimizer calls


def test_estimate_flag_prints_the_estimate_and_calls_nothing(
    stub: StubServer, tmp_path: Path
) -> None:
    done = run_drpo(
        *(
            "optimize",
            "--estimate",
            "--endpoint",
            stub.base_url,
            "--model",
            "stub-model",
            "--store",
            str(tmp_path / "runs.db"),
            "--checkpoints",
            str(tmp_path / "ck.db"),
            "--set",
            "data.retrieval=bm25",
        )
    )
    assert done.returncode == 0, done.stderr
    assert "estimate: at most" in done.stdout
    assert "upper bound" in done.stdout
    assert "time: no estimate for remote endpoints" in done.stdout
    assert not stub.requests  # not even the preflight's model list
    assert not (tmp_path / "runs.db").exists() and not (tmp_path / "ck.db").exists()
