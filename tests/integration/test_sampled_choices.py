"""Several samples of one prompt, on an endpoint without `n`, are requested side by side."""

from __future__ import annotations

import json

import pytest
from stub_server import StubRequest, StubServer

from drpo.backends.factory import build_langchain_model
from drpo.backends.llm import CallRecord, RoleClient
from drpo.prompts.optimizer import PromptProposal
from drpo.state.settings import RoleSettings

pytestmark = pytest.mark.integration


def proposal(request: StubRequest) -> str:
    return json.dumps({"analysis": "a", "prompt": "a better prompt"})


class Ledger:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def record_call(self, record: CallRecord) -> None:
        self.records.append(record)


async def test_choices_without_n_are_in_flight_together_and_each_is_recorded() -> None:
    with StubServer(proposal, latency=0.3) as stub:
        settings = RoleSettings(
            endpoint=stub.base_url, model="stub-model", supports_n=False, retries=0
        )
        model = build_langchain_model(settings, stub.base_url, "sk-test", "stub-model")
        client = RoleClient("optimizer", settings, model, stub.base_url)
        ledger = Ledger()
        client.sink = ledger
        replies = await client.structured("system", "user", PromptProposal, n=3, sample_key="k")
    assert len(replies) == 3
    assert len(stub.calls("PromptProposal")) == 3
    # Sequential requests would never overlap: the released schedule paid 3 × latency here.
    assert stub.peak_concurrency == 3
    assert [r.outcome for r in ledger.records] == ["ok", "ok", "ok"]
