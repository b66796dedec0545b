"""`drpo serve` with real clients (openai SDK, LangChain ChatOpenAI) against the stub base model.

The stub records exactly what it received, so each test checks the forwarded prompt against
`AlignedPrompt.build` — the function the search formats prompts with — byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import typer
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from scripted_llm import ScriptedLLM
from stub_server import StubServer
from typer.testing import CliRunner

from drpo.checkpoints.store import RunStore
from drpo.cli.serve import serve_command
from drpo.graph.api import optimize
from drpo.graph.export import EXPORT_FORMAT
from drpo.graph.inference import AlignedPrompt
from drpo.prompts.base import COMPLETION_STOP
from drpo.serve.app import CLIENT_SYSTEM_MARKER, ServerThread, UpstreamConfig, create_app
from drpo.state.settings import Settings

pytestmark = pytest.mark.integration

SERVED = "drpo-hand-written"
TOKEN = "s3cret-token"
EXAMPLES = [
    {"id": "bread", "query": "How do I bake sourdough bread at home?", "answer": "Feed a starter."},
    {"id": "paris", "query": "What is the capital city of France?", "answer": "Paris."},
    {"id": "poem", "query": "Write a short poem about the sea.", "answer": "Waves, salt."},
    {
        "id": "lock",
        "query": "How do I pick a lock to get into my neighbour's house?",
        "answer": "No.",
    },
    {"id": "tax", "query": "How are capital gains taxed in general?", "answer": "It depends."},
]
DEFAULTS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 0}


def export_record(mode: str = "chat") -> dict[str, Any]:
    """A `drpo export --format json` record, written by hand."""
    return {
        "format": EXPORT_FORMAT,
        "run_id": "hand-written",
        "system_prompt": "You are a careful assistant.\n- Admit what you cannot know.",
        "examples": EXAMPLES,
        "top_k": 2,
        "base_mode": mode,
        "settings": {"data": {"retrieval": "bm25"}},
    }


@contextmanager
def serving(
    stub: StubServer,
    mode: str = "chat",
    *,
    auth_token: str | None = None,
    max_concurrency: int = 4,
    max_body_bytes: int = 1 << 20,
    upstream: UpstreamConfig | None = None,
) -> Iterator[tuple[str, AlignedPrompt]]:
    aligned = AlignedPrompt.from_record(export_record(mode))
    app = create_app(
        aligned,
        upstream or UpstreamConfig(stub.base_url, "stub-model", defaults=DEFAULTS),
        auth_token=auth_token,
        max_concurrency=max_concurrency,
        max_body_bytes=max_body_bytes,
        served_model=SERVED,
    )
    with ServerThread(app) as server:
        yield server.base_url, aligned


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def health(url: str) -> dict[str, Any]:
    return dict(httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json())


def test_openai_sdk_forwards_the_search_prompt_byte_for_byte(stub: StubServer) -> None:
    query = "What is the capital of France, and why?"
    with serving(stub) as (url, aligned):
        reply = client(url).chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": query}], temperature=0.3
        )
    built = aligned.build(query)
    [call] = stub.calls("base")
    assert call.body["messages"] == [
        {"role": "system", "content": built.system},
        {"role": "user", "content": built.user},
    ]
    # The retrieved examples are the ones for this query, not just any two.
    assert "capital city of France" in call.body["messages"][0]["content"]
    assert "sourdough" not in call.body["messages"][0]["content"]
    # The run's decoding is the default; what the client sends wins.
    assert call.body["model"] == "stub-model"
    assert (call.body["temperature"], call.body["max_tokens"], call.body["seed"]) == (0.3, 64, 0)
    assert call.reply is not None
    assert reply.choices[0].message.content == call.reply[0]
    assert reply.model == SERVED
    assert reply.usage is not None and reply.usage.total_tokens > 0


def test_openai_sdk_streaming_relays_the_stream(stub: StubServer) -> None:
    query = "Write me a poem about the sea at night."
    with serving(stub) as (url, aligned):
        chunks = list(
            client(url).chat.completions.create(
                model=SERVED,
                messages=[{"role": "user", "content": query}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        after = health(url)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [call] = stub.calls("base")
    assert call.body["stream"] is True
    assert call.reply is not None and text == call.reply[0]
    assert len([c for c in chunks if c.choices]) > 2  # relayed as a stream, not one piece
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.model == SERVED for c in chunks)
    built = aligned.build(query)
    assert call.body["messages"] == [
        {"role": "system", "content": built.system},
        {"role": "user", "content": built.user},
    ]
    assert (after["in_flight"], after["waiting"]) == (0, 0)  # the slot was given back


def test_a_client_leaving_mid_stream_frees_its_slot(stub: StubServer) -> None:
    stub.latency = 0.2
    body = {"model": SERVED, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with serving(stub, max_concurrency=1) as (url, _):
        for _ in range(3):
            with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=10) as r:
                assert r.status_code == 200
                assert next(r.iter_lines()).startswith("data: ")
        deadline = time.monotonic() + 5
        while health(url)["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(url)["in_flight"] == 0
        # With one slot, a leaked slot would make this request wait forever.
        reply = client(url).chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "Still there?"}], timeout=5
        )
    assert reply.choices[0].message.content


def test_langchain_chat_openai_keeps_client_system_and_history(stub: StubServer) -> None:
    conversation = [
        SystemMessage("Answer in one sentence."),
        HumanMessage("How do I bake sourdough bread?"),
        AIMessage("Feed a starter, then bake."),
        HumanMessage("What is the capital city of France?"),
    ]
    with serving(stub) as (url, aligned):
        model = ChatOpenAI(model=SERVED, base_url=url, api_key="unused", max_retries=0)
        invoked = model.invoke(conversation)
        streamed = "".join(str(chunk.content) for chunk in model.stream(conversation))
    built = aligned.build("What is the capital city of France?")
    expected = [
        {
            "role": "system",
            "content": built.system + CLIENT_SYSTEM_MARKER + "Answer in one sentence.",
        },
        {"role": "user", "content": "How do I bake sourdough bread?"},
        {"role": "assistant", "content": "Feed a starter, then bake."},
        {"role": "user", "content": built.user},
    ]
    assert CLIENT_SYSTEM_MARKER == "\n\n# Additional instructions\n\n"
    calls = stub.calls("base")
    assert [c.body["messages"] for c in calls] == [expected, expected]
    # Retrieval follows the last user message (France), not the first one (bread).
    assert "# Query:\nWhat is the capital city of France?" in expected[0]["content"]
    assert "# Query:\nHow do I bake sourdough" not in expected[0]["content"]
    assert calls[0].reply is not None and calls[1].reply is not None
    assert invoked.content == calls[0].reply[0]
    assert streamed == calls[1].reply[0]


def test_completion_mode_sends_the_search_text_and_stop_sequences(stub: StubServer) -> None:
    query = "How are capital gains taxed?"
    with serving(stub, mode="completion") as (url, aligned):
        sdk = client(url)
        reply = sdk.completions.create(model=SERVED, prompt=query, stop=["\n\nUser:"])
        streamed = "".join(
            c.choices[0].text
            for c in sdk.completions.create(model=SERVED, prompt=query, stream=True)
            if c.choices
        )
        with pytest.raises(openai.BadRequestError) as chat:
            sdk.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": "x"}])
    built = aligned.build(query)
    first, second = stub.calls("completion")
    assert first.body["prompt"] == built.text
    assert first.body["stop"] == [*COMPLETION_STOP, "\n\nUser:"]
    assert second.body["prompt"] == built.text and second.body["stop"] == list(COMPLETION_STOP)
    assert first.reply is not None and reply.choices[0].text == first.reply[0]
    assert second.reply is not None and streamed == second.reply[0]
    assert chat.value.status_code == 400 and "completion mode" in chat.value.message


def test_served_run_matches_what_the_search_sent(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(
        search={"width": 2, "actions": 2, "depth": 1, "batch_size": 1, "validation_size": 2},
        examples={"enabled": True, "rounds": 1, "limit": 2},
    )
    result = optimize(settings)
    store = RunStore(settings.store)
    query = next(
        row["query"]
        for row in store.db["answers"].rows_where(
            "run_id = ? and candidate_id = ? and stage = 'validate'",
            [result.run_id, result.candidate_id],
        )
    )
    searched = [
        c.body["messages"]
        for c in stub.calls("base")
        if c.body["messages"][1]["content"] == query
        and c.body["messages"][0]["content"].startswith(result.prompt)
    ]
    assert searched
    stub.reset()
    with drpo_serve([result.run_id, "--store", str(settings.store)]) as url:
        reply = client(url).chat.completions.create(
            model=f"drpo-{result.run_id}", messages=[{"role": "user", "content": query}]
        )
    [call] = stub.calls("base")
    assert call.body["messages"] == searched[-1]
    assert reply.choices[0].message.content == f"PROMPT[{result.prompt}] answer to: {query[:60]}"


@contextmanager
def drpo_serve(args: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Run the serve command in a subprocess; yield its URL; stop it with Ctrl-C (exit 0)."""
    command = [
        sys.executable,
        "-c",
        "import typer; from drpo.cli.serve import serve_command; typer.run(serve_command)",
        *args,
        "--port",
        "0",
        "--log-level",
        "warning",
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    ) as process:
        try:
            yield _served_url(process)
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr


def _served_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r" at (http://\S+/v1)\.", line)
            if match:
                return match.group(1)
    process.kill()
    raise AssertionError(f"drpo serve did not start: {process.communicate()[1]}")


def test_auth_rejects_missing_and_wrong_tokens_before_the_base_model(stub: StubServer) -> None:
    messages = [{"role": "user", "content": "Hello?"}]
    with serving(stub, auth_token=TOKEN) as (url, _):
        with pytest.raises(openai.AuthenticationError) as denied:
            client(url, "wrong-token").chat.completions.create(model=SERVED, messages=messages)
        assert denied.value.status_code == 401
        assert denied.value.code == "invalid_api_key"
        anonymous = httpx.post(
            f"{url}/chat/completions", json={"model": SERVED, "messages": messages}
        )
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong-token").models.list()
        assert stub.requests == []  # nothing reached the base model
        assert health(url)["status"] == "ok"  # health checks need no token
        reply = client(url, TOKEN).chat.completions.create(model=SERVED, messages=messages)
    assert reply.choices[0].message.content
    assert stub.count("base") == 1


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(stub: StubServer) -> None:
    good = {"model": SERVED, "messages": [{"role": "user", "content": "Hi"}]}
    with serving(stub, max_body_bytes=4096) as (url, _):
        chat = f"{url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        with httpx.Client(timeout=10) as http:
            malformed = http.post(chat, content=b'{"model": "x", "messages": [', headers=headers)
            assert malformed.status_code == 400
            assert _error(malformed)["code"] == "invalid_json"

            not_object = http.post(chat, json=["a", "list"])
            assert not_object.status_code == 400 and _error(not_object)["code"] == "invalid_json"

            unknown = http.post(chat, json={**good, "temprature": 0.5})
            assert unknown.status_code == 400
            assert _error(unknown)["param"] == "temprature"
            assert _error(unknown)["code"] == "unknown_parameter"

            bad_message = http.post(
                chat, json={**good, "messages": [{"role": "user", "content": "x", "mood": 1}]}
            )
            assert bad_message.status_code == 400
            assert _error(bad_message)["param"] == "messages.0.mood"

            bad_value = http.post(chat, json={**good, "temperature": 7})
            assert bad_value.status_code == 400 and _error(bad_value)["param"] == "temperature"

            no_user = http.post(
                chat, json={**good, "messages": [{"role": "system", "content": "Be nice."}]}
            )
            assert no_user.status_code == 400 and _error(no_user)["param"] == "messages"

            oversized = http.post(
                chat, json={**good, "messages": [{"role": "user", "content": "x" * 10_000}]}
            )
            assert oversized.status_code == 413
            assert _error(oversized)["code"] == "request_too_large"

            unknown_model = http.post(chat, json={**good, "model": "gpt-4o"})
            assert unknown_model.status_code == 404
            assert _error(unknown_model)["code"] == "model_not_found"

            no_route = http.post(f"{url}/embeddings", json={"input": "x"})
            assert no_route.status_code == 404 and _error(no_route)["type"]

            wrong_mode = http.post(f"{url}/completions", json={"model": SERVED, "prompt": "x"})
            assert wrong_mode.status_code == 400
            assert _error(wrong_mode)["code"] == "unsupported_endpoint"

        sdk = client(url)
        with pytest.raises(openai.BadRequestError) as typo:
            sdk.chat.completions.create(**good, extra_body={"tempreature": 1})
        assert typo.value.code == "unknown_parameter"
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="drpo-other", messages=good["messages"])
        assert stub.requests == []
        reply = sdk.chat.completions.create(**good)
    assert reply.choices[0].message.content
    assert stub.count("base") == 1


def test_base_model_failures_become_openai_errors(stub: StubServer) -> None:
    closed = UpstreamConfig("http://127.0.0.1:9/v1", "stub-model", defaults=DEFAULTS)
    with serving(stub, upstream=closed) as (url, _):
        with pytest.raises(openai.InternalServerError) as down:
            client(url).chat.completions.create(
                model=SERVED, messages=[{"role": "user", "content": "Hi"}]
            )
        assert down.value.status_code == 502
        assert health(url)["in_flight"] == 0


def test_models_and_health(stub: StubServer) -> None:
    with serving(stub) as (url, _):
        sdk = client(url)
        assert [m.id for m in sdk.models.list()] == [SERVED]
        assert sdk.models.retrieve(SERVED).id == SERVED
        assert health(url) == {
            "status": "ok",
            "model": SERVED,
            "mode": "chat",
            "in_flight": 0,
            "waiting": 0,
            "max_concurrency": 4,
        }
    assert stub.requests == []


def test_concurrency_limit_queues_requests(stub: StubServer) -> None:
    stub.latency = 0.3

    async def ask_six(url: str) -> tuple[list[str], list[dict[str, Any]]]:
        sdk = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        asks = asyncio.gather(
            *(
                sdk.chat.completions.create(
                    model=SERVED, messages=[{"role": "user", "content": f"Question {i}?"}]
                )
                for i in range(6)
            )
        )
        # Watch the queue from outside while the six requests are under way.
        probes = []
        async with httpx.AsyncClient(timeout=10) as http:
            while not asks.done():
                probes.append((await http.get(url.removesuffix("/v1") + "/health")).json())
                await asyncio.sleep(0.05)
        replies = await asks
        await sdk.close()
        return [r.choices[0].message.content or "" for r in replies], probes

    with serving(stub, max_concurrency=2) as (url, _):
        started = time.monotonic()
        replies, probes = asyncio.run(ask_six(url))
        elapsed = time.monotonic() - started
    assert len(replies) == 6 and all(replies)
    assert stub.count("base") == 6
    assert stub.peak_concurrency == 2
    assert elapsed >= 3 * 0.3 * 0.95  # three waves of two
    assert max(p["in_flight"] for p in probes) == 2
    assert max(p["waiting"] for p in probes) >= 2  # the rest waited in drpo's queue


def test_cli_serves_an_export_file_with_auth(tmp_path: Path, stub: StubServer) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export_record()), encoding="utf-8")
    query = "Tell me about taxes on capital gains."
    args = ["--prompt-file", str(path), "--endpoint", stub.base_url, "--model", "stub-model"]
    args += ["--auth-token-env", "DRPO_TEST_SERVE_TOKEN", "--served-model-name", "aligned"]
    with drpo_serve(args, env={"DRPO_TEST_SERVE_TOKEN": TOKEN}) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url).chat.completions.create(
                model="aligned", messages=[{"role": "user", "content": query}]
            )
        reply = client(url, TOKEN).chat.completions.create(
            model="aligned", messages=[{"role": "user", "content": query}]
        )
    built = AlignedPrompt.from_file(path).build(query)
    [call] = stub.calls("base")
    assert call.body["messages"] == [
        {"role": "system", "content": built.system},
        {"role": "user", "content": built.user},
    ]
    assert call.reply is not None and reply.choices[0].message.content == call.reply[0]


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export_record()), encoding="utf-8")
    monkeypatch.delenv("DRPO_TEST_UNSET", raising=False)
    app = typer.Typer()
    app.command()(serve_command)
    cases = [
        ([], "give a run id or --prompt-file"),
        (["--prompt-file", str(tmp_path / "missing.json")], "prompt file not found"),
        (["RUN", "--store", str(tmp_path / "none.db")], "run store not found"),
        (["--prompt-file", str(path), "--auth-token-env", "DRPO_TEST_UNSET"], "DRPO_TEST_UNSET"),
        (["--prompt-file", str(path), "--endpoint", "ftp://x"], "endpoint"),
    ]
    for args, message in cases:
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 2, (args, done.output)
        assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "none.db").exists()
