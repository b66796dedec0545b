"""Live: the LLM layer and a whole (tiny) optimization against the real embedded model.

SmolLM2-135M is a toy model, so these tests check format and plumbing, never content.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field

from drpo.backends.embedded import EmbeddedServerPool
from drpo.backends.factory import build_role_models
from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.prompts.base import format_base_prompt
from drpo.state.settings import ROLES, Settings, load_settings
from drpo.state.types import Example

pytestmark = pytest.mark.live
pytest.importorskip("xllamacpp")
MODEL = "smollm2-135m"


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Verdict")
    rationale: str = Field(max_length=120)
    score: int = Field(ge=1, le=5)


def tiny_settings(tmp_path: Path, **overrides: object) -> Settings:
    roles = {role: {"model": MODEL, "max_tokens": 160} for role in ROLES}
    return load_settings(
        preset="quick",
        overrides={
            **roles,
            "store": str(tmp_path / "runs.db"),
            "checkpoints": str(tmp_path / "ck.db"),
            "embedded_slots": 2,
            "embedded_ctx": 4096,
            **overrides,
        },
        environ={},
    )


@pytest.fixture(scope="module")
def pool() -> Iterator[EmbeddedServerPool]:
    with EmbeddedServerPool(slots=2, ctx=4096) as servers:
        yield servers


async def test_chat_completion_and_structured_calls(
    pool: EmbeddedServerPool, tmp_path: Path
) -> None:
    settings = tiny_settings(
        tmp_path, base={"model": MODEL, "mode": "completion", "max_tokens": 40}
    )
    store = RunStore(settings.store)
    recorder = store.for_run("live")
    models = build_role_models(settings, pool=pool, cache=recorder, sink=recorder, run_id="live")
    example = Example(id="e", query="What is 2+2?", answer="2+2 is 4.")

    completion = format_base_prompt("Answer briefly.", [example], "What is 3+3?", "completion")
    (text,) = await models["base"].text(completion, tag="live-completion")
    assert isinstance(text, str) and text.strip()

    chat = format_base_prompt("Answer briefly.", [example], "What is 3+3?", "chat")
    (reply,) = await models["judge"].text(chat, tag="live-chat")
    assert reply.strip()

    (verdict,) = await models["judge"].structured(
        "Rate the answer from 1 to 5. Reply with JSON.", "Q: 2+2? A: 4.", Verdict, tag="live-json"
    )
    assert 1 <= verdict.score <= 5
    calls = store.calls("live")
    assert {c["tag"] for c in calls if c["outcome"] == "ok"} >= {"live-completion", "live-chat"}
    assert all(c["prompt_tokens"] > 0 for c in calls if c["outcome"] == "ok")


async def test_sampled_choices_share_one_request_and_every_choice_is_counted(
    pool: EmbeddedServerPool, tmp_path: Path
) -> None:
    # The installed llama.cpp processes the prompt once for all choices of one request, but its
    # `usage` counts only the first choice's completion tokens; drpo counts them all.
    settings = tiny_settings(
        tmp_path, optimizer={"model": MODEL, "temperature": 1.0, "max_tokens": 120}
    )
    store = RunStore(settings.store)
    recorder = store.for_run("live")
    models = build_role_models(settings, pool=pool, cache=recorder, sink=recorder, run_id="live")
    prompt = format_base_prompt("Write freely.", [], "Tell a long story about a cat.", "chat")
    texts = await models["optimizer"].text(prompt, n=2, tag="live-n")
    (call,) = [c for c in store.calls("live") if c["tag"] == "live-n"]
    assert call["outcome"] == "ok" and len(texts) == 2
    root = pool.url_for(MODEL).removesuffix("/v1")
    counts = [
        len(httpx.post(f"{root}/tokenize", json={"content": t}).json()["tokens"]) for t in texts
    ]
    assert min(counts) > 10  # both choices wrote something worth counting
    # Re-tokenizing a reply may merge or split a token or two at its ends.
    assert abs(call["completion_tokens"] - sum(counts)) <= 4


def test_a_tiny_optimization_completes_on_the_real_model(tmp_path: Path) -> None:
    settings = tiny_settings(
        tmp_path,
        search={"width": 1, "actions": 1, "depth": 1, "batch_size": 1, "validation_size": 1},
        examples={"rounds": 1, "limit": 1},
        data={"retrieval": "bm25", "top_k": 1},
    )
    result = optimize(settings)
    assert result.status == "completed"
    assert result.prompt.strip()
    store = RunStore(settings.store)
    roles = {row["role"] for row in store.calls(result.run_id)}
    assert roles == {"base", "selector", "judge", "optimizer"}
