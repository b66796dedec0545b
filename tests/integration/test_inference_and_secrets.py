"""Inference reuses the search's prompt byte for byte; no API key reaches any file drpo writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runner import run_drpo
from scripted_llm import ScriptedLLM
from stub_runs import SCRIPT, optimize_args
from stub_server import StubProcess, StubServer

from drpo.checkpoints.store import RunStore
from drpo.graph.api import optimize
from drpo.graph.inference import AlignedPrompt
from drpo.state.settings import Settings

pytestmark = pytest.mark.integration


def test_training_and_inference_build_byte_identical_base_prompts(
    stub: StubServer, make_settings: Callable[..., Settings]
) -> None:
    stub.set_responder(ScriptedLLM())
    settings = make_settings(
        search={"width": 2, "actions": 2, "depth": 1, "batch_size": 1, "validation_size": 2},
        examples={"enabled": True, "rounds": 1, "limit": 2},
    )
    result = optimize(settings)
    store = RunStore(settings.store)
    aligned = AlignedPrompt.from_run(store, result.run_id)
    validated = list(
        store.db["answers"].rows_where(
            "run_id = ? and candidate_id = ? and stage = 'validate'",
            [result.run_id, result.candidate_id],
        )
    )
    assert validated
    checked = 0
    for row in validated:
        sent = [
            c.body["messages"]
            for c in stub.calls("base")
            if c.body["messages"][1]["content"] == row["query"]
            and c.body["messages"][0]["content"].startswith(result.prompt)
        ]
        built = aligned.build(row["query"])
        assert sent, row["query"]
        assert sent[-1][0]["content"] == built.system
        assert sent[-1][1]["content"] == built.user
        checked += 1
    assert checked == len(validated)
    # The optimized examples (stage A rewrote two of them) are what inference retrieves from.
    assert sum(e.answer.startswith("Improved answer") for e in aligned.examples) == 2


def test_no_api_key_in_any_file_drpo_writes(tmp_path: Path) -> None:
    secret = "sk-drpo-FAKE-7f3a9c1e5b2d4086"
    env = {**os.environ, "DRPO_TEST_KEY": secret}
    store = tmp_path / "runs" / "runs.db"
    with StubProcess(SCRIPT) as stub:
        done = run_drpo(
            *optimize_args(
                stub.base_url,
                tmp_path / "runs",
                "--api-key-env",
                "DRPO_TEST_KEY",
                depth=1,
                examples=1,
            ),
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        run_id = RunStore(store).runs()[0]["id"]
        for args in (["runs"], ["show", run_id]):
            shown = run_drpo(*args, "--store", str(store), env=env, cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
        for fmt in ("json", "md", "txt"):
            exported = run_drpo(
                *("export", run_id, "--format", fmt, "--store", str(store)),
                *("-o", str(tmp_path / f"export.{fmt}")),
                env=env,
                cwd=tmp_path,
            )
            assert exported.returncode == 0, exported.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 5
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
        assert secret not in done.stdout + done.stderr
    for name in ("runs.db", "ck.db"):
        mode = stat.S_IMODE((tmp_path / "runs" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
