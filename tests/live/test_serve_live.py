"""Live: `drpo serve` in front of the real embedded model, called with the openai SDK.

SmolLM2-135M is a toy model, so this checks the plumbing (a reply comes back, in OpenAI's
format, with usage), never the content.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from drpo.backends.embedded import EmbeddedServerPool
from drpo.graph.export import EXPORT_FORMAT
from drpo.graph.inference import AlignedPrompt
from drpo.serve.app import ServerThread, UpstreamConfig, create_app
from drpo.state.settings import RoleSettings

pytestmark = pytest.mark.live
pytest.importorskip("xllamacpp")
MODEL = "smollm2-135m"
SERVED = "drpo-live"
RECORD = {
    "format": EXPORT_FORMAT,
    "run_id": "live",
    "system_prompt": "You are a helpful assistant. Answer briefly.",
    "examples": [
        {"id": "paris", "query": "What is the capital of France?", "answer": "Paris."},
        {"id": "water", "query": "What is water made of?", "answer": "Hydrogen and oxygen."},
        {"id": "poem", "query": "Write a two-line poem.", "answer": "Sun on the hill,\nall still."},
    ],
    "top_k": 2,
    "base_mode": "chat",
    "settings": {"data": {"retrieval": "bm25"}},
}


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    with EmbeddedServerPool(slots=1, ctx=2048) as pool:
        upstream = UpstreamConfig.from_role(
            RoleSettings(model=MODEL, max_tokens=24), base_url=pool.url_for(MODEL)
        )
        app = create_app(
            AlignedPrompt.from_record(RECORD),
            upstream,
            auth_token=None,
            max_concurrency=1,
            max_body_bytes=1 << 20,
            served_model=SERVED,
        )
        with ServerThread(app) as server:
            yield server.base_url


def test_openai_sdk_gets_a_reply_from_the_aligned_embedded_model(served_url: str) -> None:
    client = openai.OpenAI(base_url=served_url, api_key="unused", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "What is the capital of Italy?"}]
    )
    assert reply.model == SERVED
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None
    # The aligned system prompt and two examples are in the prompt, so it is not tiny.
    assert reply.usage.prompt_tokens > 40
    assert 0 < reply.usage.completion_tokens <= 24

    chunks = list(
        client.chat.completions.create(
            model=SERVED,
            messages=[{"role": "user", "content": "Name a colour."}],
            stream=True,
            max_tokens=12,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
