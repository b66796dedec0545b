"""Prove the stub OpenAI server speaks the protocol real clients expect, deterministically."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ConfigDict, Field
from stub_server import (
    STUB_PATH,
    StubError,
    StubProcess,
    StubRequest,
    StubServer,
    count_records,
    deterministic_responder,
    fake_from_schema,
    load_records,
)

from drpo.prompts.aspects import CATALOGUE
from drpo.prompts.judge import judgement_schema
from drpo.prompts.optimizer import ExampleRewrite, PromptProposal
from drpo.prompts.selector import AspectChoice


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours proxy variables; a proxy must never see loopback test traffic.
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def client(stub: StubServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stub.base_url, api_key="x", max_retries=kwargs.pop("max_retries", 0), **kwargs
    )


MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "How do I boil an egg?"},
]


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rationale: str = Field(max_length=50)
    score: int = Field(ge=1, le=5)


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str = Field(min_length=5, max_length=80)
    tone: Literal["formal", "casual"]
    verdicts: list[Verdict] = Field(min_length=1, max_length=3)
    note: str | None = None


# --- the OpenAI SDK -------------------------------------------------------------------------


def test_chat_with_n_returns_n_distinct_choices_and_usage(stub: StubServer) -> None:
    reply = client(stub).chat.completions.create(model="m", messages=MESSAGES, n=3)

    texts = [c.message.content or "" for c in reply.choices]
    assert len(texts) == 3 and len(set(texts)) == 3
    assert all(t.startswith("Answer ") for t in texts)
    assert [c.finish_reason for c in reply.choices] == ["stop"] * 3
    assert reply.model == "m" and reply.id and reply.created > 0
    assert reply.usage is not None
    prompt = "You are a helpful assistant.\nHow do I boil an egg?"
    assert reply.usage.prompt_tokens == len(prompt.split())
    assert reply.usage.completion_tokens == sum(len(t.split()) for t in texts)
    assert stub.count("base") == 1 and stub.count() == 1
    # Choice 0 of an n=3 call is the reply to the same call with n=1.
    single = client(stub).chat.completions.create(model="m", messages=MESSAGES)
    assert single.choices[0].message.content == texts[0]


def test_completions_endpoint(stub: StubServer) -> None:
    reply = client(stub).completions.create(model="m", prompt="Once upon a time", n=2)

    assert len(reply.choices) == 2
    assert all(c.text.startswith("Answer ") for c in reply.choices)
    assert reply.usage is not None and reply.usage.prompt_tokens == 4
    assert stub.requests[0].role == "completion"
    assert stub.requests[0].path == "/v1/completions"


def test_completion_text_matches_base_chat_for_the_same_prompt(stub: StubServer) -> None:
    chat = client(stub).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Same words"}]
    )
    completion = client(stub).completions.create(model="m", prompt="Same words")
    assert chat.choices[0].message.content == completion.choices[0].text


def test_streaming_chat_reassembles_to_the_plain_reply(stub: StubServer) -> None:
    plain = client(stub).chat.completions.create(model="m", messages=MESSAGES, n=2)
    stream = client(stub).chat.completions.create(
        model="m", messages=MESSAGES, n=2, stream=True, stream_options={"include_usage": True}
    )
    parts: dict[int, list[str]] = {0: [], 1: []}
    finish: dict[int, str | None] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            parts[choice.index].append(choice.delta.content or "")
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason

    assert ["".join(parts[i]) for i in (0, 1)] == [c.message.content for c in plain.choices]
    assert finish == {0: "stop", 1: "stop"}
    assert usage is not None and usage.total_tokens == plain.usage.total_tokens  # type: ignore[union-attr]


def test_stream_ends_with_done_marker(stub: StubServer) -> None:
    with httpx.stream(
        "POST",
        f"{stub.base_url}/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_models_and_health(stub: StubServer) -> None:
    assert [m.id for m in client(stub).models.list()] == ["stub-model"]
    health = httpx.get(stub.base_url.removesuffix("/v1") + "/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    # Probes are recorded but are not model calls.
    assert [c.role for c in stub.requests] == ["models", "health"]
    assert stub.count() == 0 and stub.count("health") == 1


def test_unknown_route_and_bad_json_get_http_errors(stub: StubServer) -> None:
    assert httpx.post(f"{stub.base_url}/embeddings", json={}).status_code == 404
    bad = httpx.post(f"{stub.base_url}/chat/completions", content=b"{not json")
    assert bad.status_code == 400
    missing = httpx.post(f"{stub.base_url}/chat/completions", json={"model": "m"})
    assert missing.status_code == 400


# --- structured output through LangChain ----------------------------------------------------


def test_langchain_structured_output_gets_a_valid_object(stub: StubServer) -> None:
    model = ChatOpenAI(base_url=stub.base_url, api_key="x", model="m", max_retries=0)  # type: ignore[arg-type]
    review = model.with_structured_output(Review, method="json_schema").invoke("Review this")

    assert isinstance(review, Review)
    assert all(1 <= v.score <= 5 for v in review.verdicts)
    call = stub.requests[0]
    assert call.role == "Review"
    assert call.body["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    "schema",
    [AspectChoice, PromptProposal, ExampleRewrite, judgement_schema(CATALOGUE[:4])],
    ids=lambda s: s.__name__,
)
def test_drpo_reply_schemas_are_served_by_default(
    stub: StubServer, schema: type[BaseModel]
) -> None:
    model = ChatOpenAI(base_url=stub.base_url, api_key="x", model="m", max_retries=0)  # type: ignore[arg-type]
    structured = model.with_structured_output(schema, method="json_schema")
    first = structured.invoke("Query: how do tides work?")
    again = structured.invoke("Query: how do tides work?")

    assert isinstance(first, schema)
    assert first == again
    assert stub.count(schema.__name__) == 2


def test_aspect_choice_names_are_distinct_catalogue_names(stub: StubServer) -> None:
    model = ChatOpenAI(base_url=stub.base_url, api_key="x", model="m", max_retries=0)  # type: ignore[arg-type]
    catalogue = {a.name for a in CATALOGUE}
    for query in ("tides", "taxes", "poems", "pasta"):
        choice = model.with_structured_output(AspectChoice, method="json_schema").invoke(query)
        assert isinstance(choice, AspectChoice)
        names = list(choice.aspects)
        assert len(names) == len(set(names)) == 2
        assert set(names) <= catalogue


# --- faults ---------------------------------------------------------------------------------


def test_stub_error_429_carries_retry_after(stub: StubServer) -> None:
    stub.set_responder(lambda request: StubError(429, retry_after=2))

    with pytest.raises(openai.RateLimitError) as caught:
        client(stub).chat.completions.create(model="m", messages=MESSAGES)

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert stub.requests[0].status == 429


def test_client_retries_after_a_rate_limit(stub: StubServer) -> None:
    def flaky(request: StubRequest) -> str | StubError:
        return StubError(429, retry_after=0.01) if request.call_index == 0 else "recovered"

    stub.set_responder(flaky)
    reply = client(stub, max_retries=2).chat.completions.create(model="m", messages=MESSAGES)

    assert reply.choices[0].message.content == "recovered"
    assert [c.status for c in stub.calls("base")] == [429, 200]


def test_responder_exception_becomes_http_500(stub: StubServer) -> None:
    def broken(request: StubRequest) -> str:
        raise LookupError("script ran out of replies")

    stub.set_responder(broken)
    with pytest.raises(openai.InternalServerError):
        client(stub).chat.completions.create(model="m", messages=MESSAGES)
    assert "script ran out of replies" in stub.errors[0]


def test_list_reply_and_choice_index(stub: StubServer) -> None:
    stub.set_responder(lambda r: ["a", "b"] if r.role == "base" else f"choice {r.choice_index}")
    listed = client(stub).chat.completions.create(model="m", messages=MESSAGES, n=2)
    per_choice = client(stub, default_headers={"X-Stub-Role": "custom"}).chat.completions.create(
        model="m", messages=MESSAGES, n=3
    )

    assert [c.message.content for c in listed.choices] == ["a", "b"]
    assert [c.message.content for c in per_choice.choices] == ["choice 0", "choice 1", "choice 2"]
    assert stub.count("custom") == 1


# --- determinism ----------------------------------------------------------------------------


def _ask_all(base_url: str, prompts: list[str]) -> dict[str, str]:
    sdk = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    replies = {}
    for prompt in prompts:
        reply = sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": prompt}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Review", "schema": Review.model_json_schema()},
            },
        )
        replies[prompt] = reply.choices[0].message.content or ""
    return replies


def test_replies_depend_on_content_not_on_call_order() -> None:
    prompts = [f"question {i}" for i in range(5)]
    with StubServer() as first:
        forward = _ask_all(first.base_url, prompts)
    with StubServer() as second:
        backward = _ask_all(second.base_url, prompts[::-1])

    assert forward == backward
    assert len(set(forward.values())) == len(prompts)
    with StubServer(deterministic_responder(salt="other")) as salted:
        assert _ask_all(salted.base_url, prompts[:1]) != {prompts[0]: forward[prompts[0]]}


def test_overrides_replace_one_role_only() -> None:
    responder = deterministic_responder(overrides={"base": lambda r: "fixed"})
    with StubServer(responder) as stub:
        assert (
            client(stub)
            .chat.completions.create(model="m", messages=MESSAGES)
            .choices[0]
            .message.content
            == "fixed"
        )
        assert _ask_all(stub.base_url, ["q"])["q"].startswith("{")


# --- fake_from_schema -----------------------------------------------------------------------


def test_fake_from_schema_respects_constraints_for_many_seeds() -> None:
    schema = Review.model_json_schema()
    scores = set()
    for seed in range(200):
        value = fake_from_schema(schema, seed)
        review = Review.model_validate(value)  # raises if any constraint is broken
        scores.update(v.score for v in review.verdicts)
        assert value == fake_from_schema(schema, seed)
    assert scores == {1, 2, 3, 4, 5}


def test_fake_from_schema_keywords() -> None:
    schema = {
        "type": "object",
        "required": ["level", "tags", "ratio", "flag", "ref", "fixed"],
        "properties": {
            "level": {"type": "integer", "minimum": 10, "exclusiveMaximum": 12},
            "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3},
            "ratio": {"type": "number", "minimum": 0.5, "maximum": 0.75},
            "flag": {"type": "boolean"},
            "ref": {"$ref": "#/$defs/Inner"},
            "fixed": {"const": 7},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 4}]},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"score": {"type": "integer"}}}},
    }
    value = fake_from_schema(schema, "seed")

    assert value["level"] in (10, 11)
    assert sorted(value["tags"]) == ["x", "y", "z"]
    assert 0.5 <= value["ratio"] <= 0.75
    assert isinstance(value["flag"], bool)
    assert 1 <= value["ref"]["score"] <= 5
    assert value["fixed"] == 7
    assert isinstance(value["maybe"], str) and len(value["maybe"]) <= 4


def test_fake_from_schema_values_are_stable_when_a_field_is_added() -> None:
    small = {"type": "object", "properties": {"a": {"type": "string"}}}
    large = {"type": "object", "properties": {"z": {"type": "integer"}, **small["properties"]}}
    assert fake_from_schema(small, 1)["a"] == fake_from_schema(large, 1)["a"]


# --- latency and concurrency ----------------------------------------------------------------


async def test_latency_and_peak_concurrency() -> None:
    with StubServer(latency=0.2) as stub:
        model = ChatOpenAI(base_url=stub.base_url, api_key="x", model="m", max_retries=0)  # type: ignore[arg-type]
        started = time.perf_counter()
        await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(6)))
        elapsed = time.perf_counter() - started

    assert elapsed < 6 * 0.2  # served in parallel
    assert elapsed >= 0.2
    assert stub.peak_concurrency >= 3
    assert stub.count("base") == 6


# --- separate-process mode ------------------------------------------------------------------

SCRIPT = """
from stub_server import StubError, StubRequest


def responder(request: StubRequest) -> str | StubError:
    if request.call_index == 0:
        return StubError(503)
    return f"{request.role} reply {request.call_index}"
"""


def test_subprocess_prints_ready_and_records_to_file(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    record = tmp_path / "calls.jsonl"

    with StubProcess(f"{script}:responder", record=record) as process:
        assert process.base_url.startswith("http://127.0.0.1:")
        assert process.base_url.endswith("/v1")
        sdk = openai.OpenAI(base_url=process.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="m", messages=MESSAGES)
        reply = sdk.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "base reply 1"
        # Flushed per line: readable while the stub still runs.
        assert process.count("base") == 2

    records = load_records(record)
    assert [r["status"] for r in records] == [503, 200]
    assert records[1]["body"]["messages"] == MESSAGES
    assert count_records(record) == 2


def test_subprocess_default_replies_match_in_process_ones(tmp_path: Path) -> None:
    # A different process has a different str-hash salt; replies must still be identical, or a
    # resumed run would see different answers than the crashed one.
    with StubServer() as local:
        expected = _ask_all(local.base_url, ["same question"])
    with StubProcess("stub_server:deterministic_responder()") as process:
        assert _ask_all(process.base_url, ["same question"]) == expected


def test_cli_ready_line_format(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    args = [sys.executable, str(STUB_PATH), "--port", "0", "--record", str(record)]
    args += ["--latency", "0"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:") and line.endswith("/v1")
        httpx.post(
            f"{line.split()[1]}/completions", json={"model": "m", "prompt": "hi"}
        ).raise_for_status()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()
    assert [json.loads(x)["role"] for x in record.read_text().splitlines()] == ["completion"]
