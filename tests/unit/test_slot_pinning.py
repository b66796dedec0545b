"""Slot pinning for llama.cpp's prefix cache, and the embedded server's thread and slot choice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from stub_server import StubServer

from drpo.backends.embedded import EmbeddedServerPool, thread_choice
from drpo.backends.factory import build_langchain_model, build_role_models
from drpo.backends.llm import RoleClient, slot_for
from drpo.cli.progress import ProgressPrinter
from drpo.prompts.base import format_base_prompt
from drpo.state.events import RunStarted, ServerStarted
from drpo.state.settings import ROLES, RoleSettings, load_settings
from drpo.state.types import Example


def test_calls_that_share_a_system_prompt_go_to_one_slot_and_others_spread() -> None:
    def chat(system: str, user: str) -> list[SystemMessage | HumanMessage]:
        return [SystemMessage(content=system), HumanMessage(content=user)]

    slot = slot_for(chat("judge these aspects", "query 1"), 4)
    assert all(slot_for(chat("judge these aspects", f"query {n}"), 4) == slot for n in range(9))
    assert {slot_for(chat(f"candidate prompt {n}", "q"), 4) for n in range(40)} == {0, 1, 2, 3}


def test_a_completion_prompt_is_pinned_by_its_text_before_the_query() -> None:
    examples = [Example(id="e1", query="What is 2+2?", answer="4.")]

    def slot(prompt: str, query: str) -> int:
        rendered = format_base_prompt(prompt, examples, query, mode="completion").rendered()
        assert isinstance(rendered, str)
        return slot_for(rendered, 8)

    assert len({slot("Be brief.", f"question {n}?") for n in range(10)}) == 1
    assert len({slot(f"Be brief, rule {n}.", "question?") for n in range(40)}) > 1


@pytest.mark.parametrize("pinned", [0, 4])
def test_a_pinned_client_names_the_slot_in_its_request(pinned: int) -> None:
    with StubServer(provider="llamacpp") as stub:
        settings = RoleSettings(endpoint=stub.base_url, model="stub-model", provider="llamacpp")
        model = build_langchain_model(settings, stub.base_url, "k", "stub-model")
        client = RoleClient("base", settings, model, stub.base_url, pinned_slots=pinned)
        prompt = [SystemMessage(content="the aligned prompt"), HumanMessage(content="hi?")]
        asyncio.run(client.call(prompt))
        (request,) = stub.requests
    if pinned:
        assert request.body["id_slot"] == slot_for(prompt, pinned)
    else:
        assert "id_slot" not in request.body


class _Servers:
    def url_for(self, model: object) -> str:
        return "http://127.0.0.1:9/v1"


def test_embedded_roles_are_pinned_over_the_servers_slots_only_when_asked() -> None:
    settings = load_settings(environ={})
    models = build_role_models(settings, pool=_Servers(), cache=None, sink=None, run_id="r")
    assert all(models.clients[role].pinned_slots == 0 for role in ROLES)
    pinned = settings.model_copy(update={"embedded_pin_slots": True, "embedded_slots": 2})
    models = build_role_models(pinned, pool=_Servers(), cache=None, sink=None, run_id="r")
    assert all(models.clients[role].pinned_slots == 2 for role in ROLES)


def test_the_thread_setting_overrides_the_load_based_choice_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from drpo.backends import embedded

    monkeypatch.setattr(embedded.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(embedded, "_cpu_times", lambda: None)  # no /proc/stat: load average
    monkeypatch.setattr(embedded.os, "getloadavg", lambda: (1.3, 1.0, 1.0))
    threads, why = thread_choice()
    assert threads == 1 and "2 cores" in why and "1.3 load average" in why
    assert thread_choice(2) == (2, "set by embedded_threads")
    settings = load_settings(environ={}).model_copy(update={"embedded_threads": 2})
    with EmbeddedServerPool.from_settings(settings) as pool:
        assert pool.threads == 2


def test_the_progress_shows_what_the_embedded_server_was_started_with(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with ProgressPrinter(tmp_path / "absent.db") as printer:
        printer(RunStarted(run_id="r1", store="s"))
        printer(
            ServerStarted(
                model="qwen.gguf", threads=1, slots=4, pinned=True, reason="set by embedded_threads"
            )
        )
    err = capsys.readouterr().err
    assert "qwen.gguf, 1 thread (set by embedded_threads), 4 slots, calls pinned" in err
