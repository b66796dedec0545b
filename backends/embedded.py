"""Run the embedded llama.cpp server as a child process and make sure it never outlives drpo.

``EmbeddedServer`` starts ``python -m drpo.backends.llama_server`` for one GGUF file on loopback
and waits until ``/health`` answers; ``EmbeddedServerPool`` keeps one server per distinct model
file, shared by every role that uses it. Servers stop on ``close()``/``stop()``, at interpreter
exit (atexit, also reached on Ctrl-C and SIGTERM), and, if drpo is killed outright, because the
server process asks the kernel to SIGTERM it when its parent dies.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, NoReturn

import httpx

from drpo.backends.model_files import ProgressCallback, resolve
from drpo.state.settings import RoleSettings, Settings

_READY_LINE = re.compile(r"^ready (https?://\S+)\s*$")
# llama.cpp log lines look like "0.00.002.367 E srv         start: couldn't bind HTTP server
# socket ..."; the match drops the time, level and component tag.
_LLAMA_ERROR_LINE = re.compile(r"^[\d.]+ E\s+(?:[a-z]{2,5}\s{2,})?(.*)$")
_POLL_SECONDS = 0.05


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started or stopped; the message is one line."""


def default_threads() -> int:
    """CPU threads for llama.cpp: the cores this process may use that others do not, 1 to 8.

    llama.cpp's threads wait for each other at every step, so one thread on a core another
    program holds stalls them all: on 2 cores shared with other work, 1 thread decoded 10× and
    prefilled 2× faster than 2 (bench/server_options.py, README "Performance").
    """
    return thread_choice()[0]


# Long enough to see a program that keeps a core busy, short enough to add nothing noticeable
# to a server start that takes seconds.
_BUSY_SAMPLE_SECONDS = 0.5


def busy_cores() -> tuple[float, str]:
    """Cores other programs keep busy now, and how that was measured.

    Read from the CPU time /proc/stat counts over half a second, less this process's own (its
    threads' work at start is no other program's). A sample that finds a core taken is taken
    again after a pause and the lower kept: a moment's work (a command ending, the kernel writing
    back an install's files) must not halve the server's threads for the whole run, as it did for
    one fresh-clone run (1.0 busy, 1 thread, 27 min where the others took 10-12 min); a program
    that keeps a core busy is seen in both. The 1-minute load average is only the fallback: it
    still counts a burst that has just ended, so right after `scripts/install.sh` it said 1.1 on
    an idle 2-core machine, and llama.cpp ran on one thread at half the speed (measured 23 vs 41
    tok/s prefill).
    """
    first = _busy_sample()
    if first is not None and round(first) >= 1:
        time.sleep(_BUSY_SAMPLE_SECONDS)
        again = _busy_sample()
        first = min(first, again) if again is not None else first
    if first is not None:
        return first, "busy now"
    try:
        return os.getloadavg()[0], "load average"
    except OSError:  # no load average on this platform
        return 0.0, "load unknown"


def _busy_sample() -> float | None:
    """Cores busy over one sample, less this process's own work; None off Linux."""
    before, own_before = _cpu_times(), _own_cpu_seconds()
    if before is None:
        return None
    time.sleep(_BUSY_SAMPLE_SECONDS)
    after, own = _cpu_times(), _own_cpu_seconds() - own_before
    if after is None or after[0] <= before[0]:
        return None
    total, idle = after[0] - before[0], after[1] - before[1]
    # /proc/stat counts clock ticks; this process's seconds are converted to the same unit.
    others = total - idle - own * os.sysconf("SC_CLK_TCK")
    return max(0.0, (os.cpu_count() or 1) * others / total)


def _own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    return time.process_time()


def _cpu_times() -> tuple[int, int] | None:
    """(all jiffies, idle + iowait jiffies) of the machine, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return sum(fields[:8]), fields[3] + fields[4]


def thread_choice(setting: int | None = None) -> tuple[int, str]:
    """The thread count for llama.cpp and why: the setting if given, else the idle cores."""
    if setting is not None:
        return setting, "set by embedded_threads"
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 2
    busy, measured = busy_cores()
    # A core counts as taken once another program uses more than half of it.
    threads = max(1, min(available - round(busy), 8))
    return threads, f"{available} cores, {busy:.1f} {measured}: the cores no other program uses"


class EmbeddedServer:
    """One llama.cpp server process serving one GGUF file."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        slots: int = 4,
        ctx: int = 8192,
        threads: int | None = None,
        startup_timeout: float = 120.0,
        verbose: bool = False,
        tuning: dict[str, str] | None = None,
    ) -> None:
        self.model = Path(model)
        # Extra llama_server flags (`{"--ubatch": "64"}`), for benchmarks of server options.
        self.tuning = dict(tuning or {})
        self.host = host
        self.requested_port = port
        self.slots = slots
        self.ctx = ctx
        self.threads, self.threads_reason = thread_choice(threads)
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self._process: subprocess.Popen[bytes] | None = None
        self._root_url: str | None = None
        self._output: _OutputWatcher | None = None
        self._lock = threading.RLock()

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._root_url is None:
            raise EmbeddedServerError("the embedded server is not running")
        return self._root_url

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://HOST:PORT/v1``)."""
        return f"{self.root_url}/v1"

    @property
    def port(self) -> int | None:
        """The port the server listens on, or None before it started."""
        if self._root_url is None:
            return None
        return int(self._root_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        """The server process's id, or None before it started."""
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """Whether the server process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedServer:
        """Spawn the server and block until it answers ``/health`` with 200."""
        with self._lock:
            if self.is_running():
                return self
            self._discard()
            options = {
                "--model": str(self.model),
                "--host": self.host,
                # Port 0 lets the server bind a free port itself: no window in which another
                # process can take a port we probed; the ready line reports the real one.
                "--port": str(self.requested_port),
                "--slots": str(self.slots),
                "--ctx": str(self.ctx),
                "--threads": str(self.threads),
                "--parent-pid": str(os.getpid()),
                **self.tuning,
            }
            command = [
                *(sys.executable, "-m", "drpo.backends.llama_server", "--die-with-parent"),
                *(part for option in options.items() for part in option),
                *(["--verbose"] if self.verbose else []),
            ]
            try:
                self._process = _spawn(command)
            except OSError as exc:
                raise EmbeddedServerError(f"cannot start the embedded server: {exc}") from None
            assert self._process.stdout is not None
            self._output = _OutputWatcher(self._process.stdout, echo=self.verbose)
            try:
                self._wait_until_ready()
            except BaseException:
                # Also on KeyboardInterrupt: a half-started server must not linger.
                self.stop()
                raise
            return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise EmbeddedServerError(
                        f"the embedded server for {self.model.name} exited during start-up "
                        f"({_describe_exit(code)}): {self._failure_reason()}"
                    )
                if self._root_url is None and self._output is not None:
                    self._root_url = self._output.ready_url
                if self._root_url is not None:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{self._root_url}/health").status_code == 200:
                            return
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"the embedded server for {self.model.name} was not ready after "
                        f"{self.startup_timeout:g} s; last output: {self._failure_reason()}"
                    )
                time.sleep(_POLL_SECONDS)

    def _failure_reason(self) -> str:
        if self._output is None:
            return "no output"
        lines = self._output.tail()
        # llama.cpp's first error names the cause (bad file, port in use); later ones only say
        # that it gave up.
        for line in lines:
            llama_error = _LLAMA_ERROR_LINE.match(line)
            if llama_error:
                return llama_error.group(1).strip()
        return lines[-1].removeprefix("error: ") if lines else "no output"

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to exit; its status, or None if still running after `timeout`."""
        process = self._process
        if process is None:
            return None
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, wait, and SIGKILL it if it does not exit in time. Idempotent."""
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait()
            self._discard()

    def _discard(self) -> None:
        if self._output is not None:
            self._output.close()
        self._process = None
        self._root_url = None
        self._output = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedServerPool:
    """One embedded server per distinct model file, shared by all roles that use that model."""

    def __init__(
        self,
        *,
        slots: int = 4,
        ctx: int = 8192,
        threads: int | None = None,
        startup_timeout: float = 120.0,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.slots = slots
        self.ctx = ctx
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.progress = progress
        self._servers: dict[Path, EmbeddedServer] = {}
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)
        # SIGTERM is left alone: a SystemExit raised inside a running asyncio loop can hang
        # its shutdown, and the servers die with this process anyway (parent-death signal).

    @classmethod
    def from_settings(
        cls, settings: Settings, progress: ProgressCallback | None = None
    ) -> EmbeddedServerPool:
        """A pool sized by the run's embedded slots, context length and thread setting."""
        return cls(
            slots=settings.embedded_slots,
            ctx=settings.embedded_ctx,
            threads=settings.embedded_threads,
            progress=progress,
        )

    @property
    def servers(self) -> dict[Path, EmbeddedServer]:
        """The started servers by resolved model file (a copy)."""
        with self._lock:
            return dict(self._servers)

    def url_for(self, model: str | os.PathLike[str]) -> str:
        """The base URL serving `model` (a catalogue name or a .gguf path), starting it if needed.

        Pulls a catalogue model that is not assembled yet; raises ModelFileError or
        EmbeddedServerError with a one-line message.
        """
        with self._lock:
            if self._closed:
                raise EmbeddedServerError("the embedded server pool is closed")
            path = resolve(model, progress=self.progress).resolve()
            server = self._servers.get(path)
            if server is not None and server.is_running():
                return server.base_url
            # A server that died is restarted on its old port, so URLs already handed out to
            # clients stay valid.
            port = (server.port or 0) if server is not None else 0
            if server is not None:
                server.stop()
            server = EmbeddedServer(
                path,
                port=port,
                slots=self.slots,
                ctx=self.ctx,
                threads=self.threads,
                startup_timeout=self.startup_timeout,
            )
            self._servers[path] = server
            server.start()
            return server.base_url

    def url_for_role(self, role: RoleSettings) -> str:
        """The base URL for an embedded role: its ``model_path`` if set, else its ``model``."""
        return self.url_for(role.model_path if role.model_path is not None else role.model)

    def close(self) -> None:
        """Stop every server. Idempotent; also runs at interpreter exit."""
        with self._lock:
            self._closed = True
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.stop()
        atexit.unregister(self.close)

    def __enter__(self) -> EmbeddedServerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _OutputWatcher:
    """Drains the server's stdout+stderr: finds the ready line, keeps the tail for error messages.

    A pipe rather than a log file: nothing is left behind when drpo is killed, and a pipe that
    nobody read would fill up and block the server.
    """

    def __init__(self, stream: IO[bytes], *, echo: bool) -> None:
        self.ready_url: str | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._stream = stream
        self._echo = echo
        self._thread = threading.Thread(target=self._run, name="drpo-server-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the stream was closed under us
            for raw in self._stream:  # ends at EOF, when the server exits
                line = raw.decode("utf-8", errors="replace").rstrip()
                if self._echo:
                    print(line, file=sys.stderr, flush=True)
                match = _READY_LINE.match(line)
                if match and self.ready_url is None:
                    # A server bound to all interfaces is still reached on loopback.
                    url = match.group(1).rstrip("/")
                    self.ready_url = re.sub(r"//(0\.0\.0\.0|\[::\])(?=:)", "//127.0.0.1", url)
                if line.strip():
                    self._lines.append(line.strip())

    def tail(self) -> list[str]:
        """The last output lines, once the reader has caught up with an exited server."""
        self._thread.join(timeout=2.0)
        return list(self._lines.copy())

    def close(self) -> None:
        self._thread.join(timeout=2.0)
        self._stream.close()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _raise_system_exit(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit so atexit handlers (server shutdown) run.

    Only when nobody installed a handler: an application's own choice wins. Signal handlers can
    only be set from the main thread; elsewhere the parent-death signal still cleans up.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


_SpawnJob = tuple[
    Callable[[], subprocess.Popen[bytes]], concurrent.futures.Future[subprocess.Popen[bytes]]
]


class _Spawner:
    """A thread that lives as long as the process and starts the server processes.

    Linux's parent-death signal fires when the *thread* that forked the child exits, not the
    process. Spawning from a short-lived worker thread (LangGraph runs sync nodes in a pool)
    would kill the server as soon as that thread ends.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_SpawnJob] = queue.SimpleQueue()
        # A daemon thread is never joined at shutdown, so it outlives every atexit handler.
        threading.Thread(target=self._run, name="drpo-server-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            make, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(make())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, make: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._jobs.put((make, future))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """Start `command` with stdout and stderr on one pipe."""

    def make() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches drpo only, and drpo decides when
            # the server stops (atexit or close()), instead of both dying at the same instant.
            start_new_session=True,
        )

    # The main thread lives until the process exits, so it may spawn directly.
    if threading.current_thread() is threading.main_thread():
        return make()
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
        spawner = _spawner
    return spawner.submit(make)
