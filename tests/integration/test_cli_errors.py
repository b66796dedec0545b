"""Bad input gets one `error:` line, exit code 2, no traceback, and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_runner import run_drpo
from stub_server import StubProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub_url() -> str:  # type: ignore[misc]
    with StubProcess() as stub:
        yield stub.base_url


def write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


CASES = {
    "malformed toml": (["--config", "{tmp}/bad.toml"], "is not valid TOML"),
    "missing config": (["--config", "{tmp}/nope.toml"], "config file not found"),
    "unknown preset": (["--preset", "fastest"], "unknown preset 'fastest'"),
    "unknown role field": (["--config", "{tmp}/field.toml"], "unknown setting 'judge.colour'"),
    "unknown search field": (["--set", "search.widht=3"], "unknown setting 'search.widht'"),
    "bad value": (["--width", "0"], "invalid setting 'search.width'"),
    "bad --set": (["--set", "nonsense"], "--set expects KEY=VALUE"),
    "zero server threads": (["--set", "embedded_threads=0"], "invalid setting 'embedded_threads'"),
    "non-numeric server threads": (
        ["--set", "embedded_threads=two"],
        "invalid setting 'embedded_threads'",
    ),
    "unreachable url": (["--endpoint", "http://127.0.0.1:9/v1"], "is unreachable"),
    "missing key variable": (
        ["--endpoint", "{stub}", "--model", "stub-model", "--api-key-env", "DRPO_NOT_SET_KEY"],
        "environment variable DRPO_NOT_SET_KEY",
    ),
    "unknown remote model": (["--endpoint", "{stub}", "--model", "gpt-9"], "'gpt-9' is not served"),
    "unknown embedded model": (["--model", "llama-99b"], "unknown embedded model 'llama-99b'"),
    "data missing field": (["--train", "{tmp}/missing.jsonl"], "line 2: missing field 'query'"),
    "data invalid json": (["--train", "{tmp}/broken.jsonl"], "line 3: invalid JSON"),
    "data not utf8": (["--train", "{tmp}/latin1.jsonl"], "not UTF-8"),
    "data empty": (["--train", "{tmp}/empty.jsonl"], "empty"),
    "examples missing answer": (["--examples", "{tmp}/noanswer.jsonl"], "missing field 'answer'"),
    "data wrong type": (["--train", "{tmp}/q.xlsx"], "unsupported file type"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimize_rejects_bad_input(case: str, tmp_path: Path, stub_url: str) -> None:
    write(tmp_path, "bad.toml", "[search\nwidth = 2")
    write(tmp_path, "field.toml", "[judge]\ncolour = 'red'\n")
    write(tmp_path, "missing.jsonl", '{"query": "a"}\n{"prompt_text": "b"}\n')
    write(tmp_path, "broken.jsonl", '{"query": "a"}\n{"query": "b"}\n{"query": "c",,}\n')
    write(tmp_path, "latin1.jsonl", '{"query": "caf\xe9"}\n'.encode("latin-1"))
    write(tmp_path, "empty.jsonl", "")
    write(tmp_path, "noanswer.jsonl", '{"query": "a"}\n')
    write(tmp_path, "q.xlsx", "x")
    args, expected = CASES[case]
    args = [a.format(tmp=tmp_path, stub=stub_url) for a in args]
    store = tmp_path / "store" / "runs.db"
    env = {k: v for k, v in os.environ.items() if k != "DRPO_NOT_SET_KEY"}
    done = run_drpo("optimize", "--store", str(store), *args, cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not store.exists(), "a rejected run must not write the run store"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["resume", "no-such-run"], "no run 'no-such-run'"),
        (["show", "no-such-run"], "no run 'no-such-run'"),
        (["export", "no-such-run", "--format", "pdf"], "unknown export format 'pdf'"),
        (["runs", "--store", "/nonexistent/runs.db"], "run store not found"),
    ],
)
def test_run_commands_reject_unknown_runs(args: list[str], expected: str, tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    from drpo.checkpoints.store import RunStore

    RunStore(store).close()
    before = store.read_bytes()
    extra = [] if "--store" in args else ["--store", str(store)]
    done = run_drpo(*args, *extra)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error:") and expected in done.stderr
    assert "Traceback" not in done.stderr
    assert store.read_bytes() == before
