"""Provider contract tests: a whole quick search against each provider mode of the stub.

Each mode refuses what the real provider refuses (tests/support/provider_rules.py), so "zero
refused requests" over a whole search is evidence that drpo's requests follow each provider's
rules, for a chat model name and a reasoning model name. The recorded request bodies are that
evidence. The modes are also shown to refuse the request shapes drpo sent before (so a mode
cannot be a yes-man), and a provider setting that contradicts the endpoint fails before
anything is written.
"""

from __future__ import annotations

import faulthandler
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_runner import run_drpo
from stub_server import StubCall, StubServer

from drpo.backends.providers import detect_provider
from drpo.graph.api import optimize
from drpo.prompts.optimizer import ExampleRewrite, PromptProposal
from drpo.prompts.selector import AspectChoice
from drpo.state.settings import ROLES, load_settings

pytestmark = pytest.mark.integration

CHAT_MODEL, REASONING_MODEL = "gpt-4o-mini", "gpt-5-mini"
# Detected from the probes where the server answers one; set where only the host name tells
# (a loopback stub cannot be api.openai.com).
SETTING = {"openai": "openai", "azure": "azure", "anthropic": "anthropic"}
MODES = ("openai", "azure", "vllm", "llamacpp", "ollama", "anthropic")
STRUCTURED = ("AspectChoice", "Judgement", "PromptProposal", "ExampleRewrite")


def run_quick_search(
    stub: StubServer, provider: str, model: str, folder: Path, **role_settings: Any
) -> Any:
    detect_provider.cache_clear()  # every stub gets a fresh port, but be explicit
    role = {"endpoint": stub.base_url, "model": model, "provider": SETTING.get(provider, "auto")}
    role.update(role_settings)
    overrides = {
        **{name: dict(role) for name in ROLES},
        "store": str(folder / "runs.db"),
        "checkpoints": str(folder / "ck.db"),
        "data": {"retrieval": "bm25"},
    }
    return optimize(load_settings(preset="quick", overrides=overrides, environ={}))


def model_calls(stub: StubServer) -> list[StubCall]:
    return [c for c in stub.requests if c.role not in ("health", "models")]


@pytest.mark.parametrize("model", [CHAT_MODEL, REASONING_MODEL])
@pytest.mark.parametrize("provider", MODES)
def test_a_quick_search_sends_no_request_the_provider_refuses_or_ignores(
    provider: str, model: str, tmp_path: Path
) -> None:
    with StubServer(provider=provider, models=(model,)) as stub:
        result = run_quick_search(stub, provider, model, tmp_path)
    calls = model_calls(stub)
    refused = [(c.status, c.error) for c in calls if c.status != 200]
    ignored = [(c.role, c.ignored) for c in calls if c.ignored]
    assert result.status == "completed"
    assert refused == [] and ignored == []
    bodies = [c.body for c in calls]
    roles = {c.role for c in calls}
    if provider == "anthropic":
        # No response_format there: the schema rides in the system prompt.
        assert all("response_format" not in b for b in bodies)
        assert all(int(b.get("n") or 1) == 1 for b in bodies)
    else:
        assert set(STRUCTURED) <= roles
    reasoning = model == REASONING_MODEL and provider in ("openai", "azure")
    for body in bodies:
        # Ollama reads only `max_tokens`; everyone else gets `max_completion_tokens`.
        length = "max_tokens" if provider == "ollama" else "max_completion_tokens"
        assert length in body and {"max_tokens", "max_completion_tokens"} - {length} - set(body)
    if reasoning:
        assert all("temperature" not in b and "top_p" not in b for b in bodies)
        # Room for the reasoning tokens on top of the roles' max_tokens (at most 512 here).
        assert min(b["max_completion_tokens"] for b in bodies) > 512
    else:
        assert all("top_p" in b for b in bodies)
    if provider in ("llamacpp", "ollama", "anthropic") or reasoning:
        assert all(int(b.get("n") or 1) == 1 for b in bodies)


@pytest.mark.parametrize("mode", ["json_object", "prompt"])
def test_the_fallbacks_a_refusal_suggests_work_against_openai(mode: str, tmp_path: Path) -> None:
    with StubServer(provider="openai", models=(CHAT_MODEL,)) as stub:
        result = run_quick_search(stub, "openai", CHAT_MODEL, tmp_path, structured_output=mode)
    calls = model_calls(stub)
    assert result.status == "completed"
    assert [c.status for c in calls if c.status != 200] == []
    structured = [c for c in calls if "valid for this JSON schema" in json.dumps(c.body)]
    formats = {json.dumps(c.body.get("response_format")) for c in structured}
    assert structured and formats == {
        '{"type": "json_object"}' if mode == "json_object" else "null"
    }


@pytest.mark.parametrize("model", [CHAT_MODEL, REASONING_MODEL])
def test_azure_deployment_urls_with_an_api_version(model: str, tmp_path: Path) -> None:
    with StubServer(provider="azure", models=(model,)) as stub:
        resource = stub.base_url.removesuffix("/v1")
        result = run_quick_search(
            stub, "azure", model, tmp_path, endpoint=resource, api_version="2024-10-21"
        )
    calls = model_calls(stub)
    assert result.status == "completed"
    assert [c.status for c in calls if c.status != 200] == []
    # Only the deployment URL maps to this path: the bare resource path would be a 404.
    assert {c.path for c in calls} == {"/chat/completions"}
    if model == REASONING_MODEL:
        assert all("temperature" not in c.body for c in calls)


def test_openai_mode_gets_strict_schemas_without_length_keywords(tmp_path: Path) -> None:
    with StubServer(provider="openai", models=(CHAT_MODEL,)) as stub:
        run_quick_search(stub, "openai", CHAT_MODEL, tmp_path)
    schema = next(c for c in stub.requests if c.role == "AspectChoice").body["response_format"]
    sent = schema["json_schema"]["schema"]
    assert sent["required"] == ["analysis", "aspects", "new_aspects"]
    assert {"type": "null"} in sent["properties"]["new_aspects"]["anyOf"]
    assert "maxLength" not in json.dumps(sent)


def test_llamacpp_mode_gets_exactly_the_requests_drpo_sent_before(tmp_path: Path) -> None:
    # Before providers existed every endpoint got pydantic's schema under the model's title,
    # strict, and these body fields; llama.cpp (and the embedded server) still gets just that.
    with StubServer(provider="llamacpp", models=("local",)) as stub:
        run_quick_search(stub, "llamacpp", "local", tmp_path)
    models = {m.__name__: m for m in (AspectChoice, PromptProposal, ExampleRewrite)}
    fields = {"model", "stream", "messages", "temperature", "top_p", "max_completion_tokens"}
    for call in model_calls(stub):
        # The judge also asks for token logprobs, for its probability-weighted scores.
        scored = {"logprobs", "top_logprobs"} if call.role == "Judgement" else set()
        assert set(call.body) - {"seed", "response_format"} == fields | scored, call.body
        if call.role in models:
            assert call.body["response_format"] == {
                "type": "json_schema",
                "json_schema": {
                    "name": call.role,
                    "schema": models[call.role].model_json_schema(),
                    "strict": True,
                },
            }
    assert stub.probes == ["/props"]


# ---- the modes refuse the request shapes drpo sent before -------------------------------------


def old_request(model: str, **extra: Any) -> dict[str, Any]:
    """What drpo sent to every endpoint before provider modes: pydantic's schema, temperature 0."""
    schema = AspectChoice.model_json_schema()
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Pick aspects."},
            {"role": "user", "content": "q"},
        ],
        "temperature": 0.0,
        "top_p": 1.0,
        "max_completion_tokens": 512,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "AspectChoice", "schema": schema, "strict": True},
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("provider", "body", "expected"),
    [
        ("openai", old_request(CHAT_MODEL), "Missing 'new_aspects'"),
        ("azure", old_request(CHAT_MODEL), "Missing 'new_aspects'"),
        ("openai", old_request(REASONING_MODEL), "'temperature' does not support 0.0"),
        ("openai", {**old_request(REASONING_MODEL), "max_tokens": 5}, "'max_tokens' is not"),
        ("llamacpp", old_request("local", n=3), "Only one completion choice is allowed"),
        ("anthropic", old_request("claude", n=3), "n: must be exactly 1"),
        ("vllm", {**old_request("m"), "response_format": {"type": "xml"}}, "Unknown response"),
    ],
)
def test_each_mode_refuses_what_its_provider_refuses(
    provider: str, body: dict[str, Any], expected: str
) -> None:
    with StubServer(provider=provider) as stub:
        reply = httpx.post(f"{stub.base_url}/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert expected in error["message"]
    assert error["type"] in ("invalid_request_error", "BadRequestError")
    if provider in ("openai", "azure"):
        assert set(error) == {"message", "type", "param", "code"}


def test_ollama_mode_answers_one_choice_and_reports_what_it_ignored() -> None:
    with StubServer(provider="ollama") as stub:
        reply = httpx.post(f"{stub.base_url}/chat/completions", json=old_request("m", n=3))
    assert reply.status_code == 200 and len(reply.json()["choices"]) == 1
    assert stub.requests[-1].ignored == ["n", "max_completion_tokens"]


# ---- refusals and contradictions ---------------------------------------------------------------


def drpo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_drpo(*args, cwd=cwd)


@contextmanager
def stacks_if_slower_than(seconds: float, path: Path) -> Iterator[Callable[[], str]]:
    """Dump every thread's stack to `path` if the block runs over `seconds`; yield a reader."""
    with path.open("w", encoding="utf-8") as handle:
        faulthandler.dump_traceback_later(seconds, file=handle)
        try:
            yield lambda: path.read_text(encoding="utf-8")
        finally:
            faulthandler.cancel_dump_traceback_later()


def test_a_provider_that_contradicts_the_endpoint_is_one_error_line_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with StubServer(provider="llamacpp", models=("local",)) as stub:
        done = drpo(
            "optimize", "--endpoint", stub.base_url, "--model", "local",
            "--store", str(tmp_path / "runs.db"), "--checkpoints", str(tmp_path / "ck.db"),
            "--set", "judge.provider=vllm", "--set", "data.retrieval=bm25",
            cwd=tmp_path,
        )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: judge.provider = 'vllm' contradicts the endpoint")
    assert "reports itself as 'llamacpp'" in lines[0]
    assert model_calls(stub) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_refusal_is_one_line_naming_the_fix_and_pauses_the_run_without_retries(
    tmp_path: Path,
) -> None:
    # A generic proxy in front of OpenAI: drpo does not know the strict rules apply there.
    with StubServer(provider="openai", models=(CHAT_MODEL,)) as stub:
        url = stub.base_url
        done = drpo(
            "optimize", "--endpoint", stub.base_url, "--model", CHAT_MODEL,
            "--store", str(tmp_path / "runs.db"), "--checkpoints", str(tmp_path / "ck.db"),
            "--preset", "quick", "--set", "data.retrieval=bm25", "--skip-examples",
            cwd=tmp_path,
        )  # fmt: skip
    refused = [c for c in model_calls(stub) if c.status == 400]
    assert done.returncode == 3, done.stderr
    assert "Missing 'new_aspects'" in done.stderr
    assert 'selector.structured_output = "json_object"' in done.stderr
    assert f"{url} (generic) refused the request (HTTP 400)" in done.stderr
    # Not retried like a 5xx: the selector calls already in flight (one per query) were each
    # refused once, and nothing else was sent.
    bodies = [json.dumps(c.body, sort_keys=True) for c in refused]
    assert len(set(bodies)) == len(bodies) == len(model_calls(stub))
    assert {c.role for c in refused} == {"AspectChoice"}

    # The pause line gives the resume command with the fix for every role on that endpoint;
    # resumed that way, the run completes and nothing more is refused.
    command = done.stderr.split("(resume with: ")[1].split(")")[0].split()
    assert command.count("--set") == 4 and "selector.provider=openai" in command
    store = ("--store", str(tmp_path / "runs.db"))
    refused_set = drpo(*command[1:3], *store, "--set", "search.depth=9", cwd=tmp_path)
    assert refused_set.returncode == 2
    assert refused_set.stderr.startswith("error: resume --set cannot change 'search'")
    # This resume once stalled in CI for 2 min after 3 of its 4 first calls and exited 1 with
    # nothing on stderr; it has not happened here in dozens of runs, idle or under load. If it
    # recurs, the failure carries every thread's stack and what the stub received.
    port = int(url.split(":")[2][:-3])
    with (
        StubServer(provider="openai", models=(CHAT_MODEL,), port=port) as stub,
        stacks_if_slower_than(60, tmp_path / "stacks.txt") as stacks,
    ):
        resumed = drpo(*command[1:], *store, cwd=tmp_path)
    received = [(c.role, c.status) for c in stub.requests]
    assert resumed.returncode == 0, (resumed.stderr, resumed.stdout, received, stacks())
    assert [c.status for c in model_calls(stub) if c.status != 200] == []
