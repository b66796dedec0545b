"""Live tests of the embedded llama.cpp server with the small SmolLM2-135M model.

They start real server processes (about 0.6 s each) and check that no server ever outlives the
process that started it: normal exit, an uncaught error, Ctrl-C, SIGTERM and SIGKILL.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from drpo.backends.embedded import EmbeddedServer, EmbeddedServerError, EmbeddedServerPool
from drpo.backends.model_files import pull

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks processes in /proc"),
]
pytest.importorskip("xllamacpp")

MODEL = "smollm2-135m"
GONE_WITHIN = 5.0


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private model cache holding the pulled test model (the user's cache is not touched)."""
    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRPO_CACHE_DIR", str(folder))
        pull(MODEL)
        yield folder


@pytest.fixture(autouse=True)
def _restore_sigterm_handler() -> Iterator[None]:
    """A pool turns SIGTERM into SystemExit; keep that out of the pytest process afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its new parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, within: float = GONE_WITHIN) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _kill_leftover(pid: int) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_pool_serves_shares_and_stops(model_cache: Path) -> None:
    pool = EmbeddedServerPool(slots=2, ctx=2048)
    try:
        url = pool.url_for(MODEL)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        models = httpx.get(f"{url}/models", timeout=10).json()
        assert models["data"][0]["meta"]["n_ctx"] == 2048
        # Same model by name or by file: one server.
        assert pool.url_for(MODEL) == url
        assert pool.url_for(model_cache / f"{MODEL}.gguf") == url
        (server,) = pool.servers.values()
        assert server.pid is not None
        pid = server.pid
        reply = httpx.post(
            f"{url}/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=30,
        )
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["role"] == "assistant"
    finally:
        pool.close()
    assert not _alive(pid)
    with pytest.raises(EmbeddedServerError, match="closed"):
        pool.url_for(MODEL)


def test_server_started_from_a_short_lived_thread_survives_it(model_cache: Path) -> None:
    # The parent-death signal tracks the thread that forked: spawning from a worker thread
    # that then ends must not kill the server.
    pool = EmbeddedServerPool(slots=1, ctx=1024)
    urls: list[str] = []
    try:
        worker = threading.Thread(target=lambda: urls.append(pool.url_for(MODEL)))
        worker.start()
        worker.join()
        time.sleep(1.0)
        assert httpx.get(f"{urls[0]}/models", timeout=10).status_code == 200
    finally:
        pool.close()


def test_server_context_manager_and_restart_after_crash(model_cache: Path) -> None:
    with EmbeddedServer(model_cache / f"{MODEL}.gguf", slots=1, ctx=1024) as server:
        assert httpx.get(f"{server.root_url}/health", timeout=10).status_code == 200
        pid = server.pid
        assert pid is not None
    assert not _alive(pid)

    pool = EmbeddedServerPool(slots=1, ctx=1024)
    try:
        url = pool.url_for(MODEL)
        (server,) = pool.servers.values()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        server.wait(5)
        # A dead server is replaced on the same port, so handed-out URLs keep working.
        assert pool.url_for(MODEL) == url
        assert httpx.get(f"{url}/models", timeout=10).status_code == 200
    finally:
        pool.close()


def test_start_failure_is_one_line_with_the_cause(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 10)
    with pytest.raises(EmbeddedServerError) as error:
        EmbeddedServer(bad, slots=1, ctx=1024).start()
    message = str(error.value)
    assert "\n" not in message
    assert "exited during start-up" in message and "magic" in message


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from drpo.backends.embedded import EmbeddedServerPool

    # A shell's background job starts with SIGINT ignored; restore Python's Ctrl-C behaviour.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    pool = EmbeddedServerPool(slots=1, ctx=1024)
    pool.url_for(sys.argv[1])
    (server,) = pool.servers.values()
    print(server.pid, flush=True)
    mode = sys.argv[2]
    if mode == "exit":
        sys.exit(0)
    if mode == "error":
        raise RuntimeError("boom")
    time.sleep(120)  # until the test signals us
    """
)


@pytest.mark.parametrize(
    ("mode", "signum"),
    [
        ("exit", None),
        ("error", None),
        ("wait", signal.SIGINT),
        ("wait", signal.SIGTERM),
        ("wait", signal.SIGKILL),
    ],
    ids=["normal-exit", "uncaught-error", "sigint", "sigterm", "sigkill"],
)
def test_server_never_outlives_its_parent(
    model_cache: Path, tmp_path: Path, mode: str, signum: signal.Signals | None
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), MODEL, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server_pid: int | None = None
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the child did not start a server within 60 s"
        line = child.stdout.readline().strip()
        assert line.isdigit(), (
            f"child said {line!r}; stderr: {child.stderr.read() if child.stderr else ''}"
        )
        server_pid = int(line)
        if signum is not None:
            assert _alive(server_pid)
            child.send_signal(signum)
        child.wait(timeout=30)
        assert _wait_gone(server_pid), f"server {server_pid} outlived its parent ({mode}, {signum})"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if server_pid is not None:
            _kill_leftover(server_pid)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
