"""drpo.langchain: aligned_prompt and AlignedChat send what the search scored, also in LangGraph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from scripted_llm import ScriptedLLM
from stub_server import StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.graph.export import export_record
from drpo.langchain import AlignedChat, aligned_prompt
from drpo.state.settings import Settings
from drpo.state.types import RunResult

pytestmark = pytest.mark.integration


@pytest.fixture
def searched(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> tuple[RunResult, Settings]:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(
        search={"width": 2, "actions": 2, "depth": 1, "batch_size": 1, "validation_size": 2},
        examples={"enabled": True, "rounds": 1, "limit": 2},
    )
    return optimize(settings), settings


def _scored_requests(stub: StubServer, settings: Settings, result: RunResult) -> dict[str, list]:
    """query → the messages the search sent to the base model for the final prompt's answers."""
    store = RunStore(settings.store)
    try:
        rows = list(
            store.db["answers"].rows_where(
                "run_id = ? and candidate_id = ? and stage = 'validate'",
                [result.run_id, result.candidate_id],
            )
        )
    finally:
        store.close()
    sent = {}
    for row in rows:
        matching = [
            c.body["messages"]
            for c in stub.calls("base")
            if c.body["messages"][-1]["content"] == row["query"]
            and c.body["messages"][0]["content"].startswith(result.prompt)
        ]
        sent[row["query"]] = matching[-1]
    assert sent
    return sent


def _chat(stub: StubServer) -> ChatOpenAI:
    return ChatOpenAI(base_url=stub.base_url, model="stub-model", api_key="unused", max_retries=0)


def test_aligned_chat_sends_byte_for_byte_what_the_search_scored(
    stub: StubServer, searched: tuple[RunResult, Settings]
) -> None:
    result, settings = searched
    scored = _scored_requests(stub, settings, result)
    chat = AlignedChat(model=_chat(stub), run=result.run_id, store=settings.store)
    stub.reset()
    queries = list(scored)
    replies = [chat.invoke(queries[0]), *chat.batch(queries[1:])]
    streamed = "".join(str(chunk.content) for chunk in chat.stream({"query": queries[0]}))
    assert all(isinstance(r, AIMessage) for r in replies)
    assert streamed == replies[0].content
    calls = stub.calls("base")
    assert len(calls) == len(queries) + 1
    for call in calls:
        query = call.body["messages"][-1]["content"]
        assert call.body["messages"] == scored[query]


def test_the_prompt_runnable_from_an_exported_file_equals_the_search_prompt(
    stub: StubServer, searched: tuple[RunResult, Settings], tmp_path: Path
) -> None:
    import json

    result, settings = searched
    scored = _scored_requests(stub, settings, result)
    store = RunStore(settings.store)
    try:
        record = export_record(store, store.run(result.run_id) or {})
    finally:
        store.close()
    exported = tmp_path / "prompt.json"
    exported.write_text(json.dumps(record), encoding="utf-8")
    prompt = aligned_prompt(exported)
    for query, messages in scored.items():
        built = prompt.invoke(query).to_messages()
        assert [(m.type, m.content) for m in built] == [
            ("system", messages[0]["content"]),
            ("human", messages[1]["content"]),
        ]
    # A caller's own system message goes after the alignment prompt, as with `drpo serve`.
    query = next(iter(scored))
    built = prompt.invoke([SystemMessage(content="Answer in French."), HumanMessage(content=query)])
    system = built.to_messages()[0].content
    assert (
        system == scored[query][0]["content"] + "\n\n# Additional instructions\n\nAnswer in French."
    )


class _QA(TypedDict, total=False):
    question: str
    answer: str


async def test_aligned_chat_works_inside_a_langgraph_node(
    stub: StubServer, searched: tuple[RunResult, Settings]
) -> None:
    result, settings = searched
    scored = _scored_requests(stub, settings, result)
    chat = AlignedChat(model=_chat(stub), run=result, store=settings.store)

    async def answer(state: _QA) -> _QA:
        reply = await chat.ainvoke(state["question"])
        return {"answer": str(reply.content)}

    builder = StateGraph(_QA)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()
    stub.reset()
    query = next(iter(scored))
    out = await graph.ainvoke({"question": query})
    assert out["answer"].startswith(f"PROMPT[{result.prompt}")
    assert [c.body["messages"] for c in stub.calls("base")] == [scored[query]]
