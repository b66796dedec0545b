"""Token usage read from replies, with the prompt tokens the server took from its prefix cache."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from drpo.backends.llm import CallRecord, _read_result
from drpo.checkpoints.store import RunStore


def test_openai_usage_with_cached_prompt_tokens() -> None:
    # What llama.cpp's server (and OpenAI, vLLM) send when a prefix was already in the cache.
    result = LLMResult(
        generations=[[ChatGeneration(message=AIMessage(content="hi"))]],
        llm_output={
            "token_usage": {
                "prompt_tokens": 217,
                "completion_tokens": 5,
                "total_tokens": 222,
                "prompt_tokens_details": {"cached_tokens": 210},
            }
        },
    )
    texts, usage = _read_result(result)
    assert texts == ["hi"]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (217, 5, 210)


def test_usage_without_cache_details_counts_none_cached() -> None:
    result = LLMResult(
        generations=[[Generation(text="a"), Generation(text="b")]],
        llm_output={"token_usage": {"prompt_tokens": 40, "completion_tokens": 9}},
    )
    texts, usage = _read_result(result)
    assert texts == ["a", "b"]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (40, 9, 0)


def test_usage_metadata_when_the_reply_has_no_token_usage() -> None:
    message = AIMessage(
        content="x",
        usage_metadata={
            "input_tokens": 30,
            "output_tokens": 4,
            "total_tokens": 34,
            "input_token_details": {"cache_read": 12},
        },
    )
    result = LLMResult(generations=[[ChatGeneration(message=message)]], llm_output={})
    _, usage = _read_result(result)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (30, 4, 12)


def test_cached_tokens_reach_the_cost_view(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    record = CallRecord(
        "judge", "m", "e", "ok", prompt_tokens=500, completion_tokens=50, cached_tokens=300
    )
    store.record_call("r1", record)
    store.record_call("r1", CallRecord("judge", "m", "e", "ok", prompt_tokens=100))
    [row] = store.cost_breakdown("r1")
    assert (row["prompt_tokens"], row["cached_tokens"]) == (600, 300)


def test_a_store_made_before_cached_tokens_gains_the_column_and_view(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore(path).db.conn.close()
    # Turn it into what an older version wrote: no column, a view without it.
    with sqlite3.connect(path) as db:
        db.execute("drop view call_costs")
        db.execute("alter table llm_calls drop column cached_tokens")
        db.execute(
            "create view call_costs as select run_id, '' as stage, level, role, "
            "count(*) as calls from llm_calls group by run_id, level, role"
        )
    store = RunStore(path)
    store.record_call("r1", CallRecord("base", "m", "e", "ok", prompt_tokens=9, cached_tokens=4))
    [row] = store.cost_breakdown("r1")
    assert row["cached_tokens"] == 4
