"""Serve one GGUF model over llama.cpp's OpenAI-compatible HTTP API (the embedded server process).

Run as ``python -m drpo.backends.llama_server --model PATH --port N``. xllamacpp runs llama.cpp's
own C++ server inside this process; this module only configures it, prints
``ready http://HOST:PORT`` on stdout once the model is loaded and the socket listens, and shuts it
down cleanly on SIGTERM or SIGINT. ``--port 0`` lets the server pick a free port (race-free); the
ready line then carries the real one. Exit status: 0 after a clean stop, 1 if it cannot start.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# ggml_type values (ggml.h) of the KV cache types worth trying on a CPU.
_KV_TYPES = {"f16": 1, "q8_0": 8}
_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
_PARENT_POLL_SECONDS = 1.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    # argparse, not typer: this is an internal entry point, and importing less starts faster.
    parser = argparse.ArgumentParser(
        prog="python -m drpo.backends.llama_server",
        description="Serve one GGUF model over llama.cpp's OpenAI-compatible HTTP API.",
    )
    parser.add_argument("--model", required=True, type=Path, help="the GGUF file to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--slots", type=int, default=4, help="parallel requests (n_parallel)")
    parser.add_argument("--ctx", type=int, default=8192, help="KV cache tokens shared by all slots")
    parser.add_argument("--threads", type=int, default=2)
    # Tuning knobs, llama.cpp's defaults unless given; bench/server_options.py compares them.
    parser.add_argument("--ubatch", type=int, default=None, help="physical batch (n_ubatch)")
    parser.add_argument("--poll", type=int, default=None, help="thread busy-wait level, 0–100")
    parser.add_argument("--flash-attn", choices=("auto", "on", "off"), default=None)
    parser.add_argument("--kv-type", choices=tuple(_KV_TYPES), default=None, help="KV cache type")
    parser.add_argument(
        "--cache-reuse", type=int, default=None, help="min chunk reused by KV shifting (0 off)"
    )
    parser.add_argument(
        "--draft", type=Path, default=None, help="a small GGUF of the same family, drafting tokens"
    )
    parser.add_argument("--verbose", action="store_true", help="llama.cpp's info-level log")
    parser.add_argument(
        "--die-with-parent", action="store_true", help="exit when the starting process dies"
    )
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="with --die-with-parent: the expected parent"
    )
    args = parser.parse_args(argv)
    for flag in ("slots", "ctx", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def _die_with_parent(stop: threading.Event, parent_pid: int | None) -> None:
    expected = parent_pid if parent_pid is not None else os.getppid()
    if sys.platform.startswith("linux"):
        # The kernel sends SIGTERM when the parent exits, even if it is SIGKILLed. (It tracks the
        # parent *thread*: the caller must spawn from a thread that lives as long as it does.)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            print(f"warning: prctl failed (errno {ctypes.get_errno()})", file=sys.stderr)
    if os.getppid() != expected:
        # The parent died before prctl took effect: nobody will ever stop this server.
        sys.exit(1)

    # Portable fallback (and a second line of defence): poll for being re-parented.
    def watch() -> None:
        while not stop.wait(_PARENT_POLL_SECONDS):
            if os.getppid() != expected:
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _apply_tuning(params: object, args: argparse.Namespace) -> None:
    """Set the tuning knobs that were given; the others keep llama.cpp's defaults."""
    p: Any = params
    if args.ubatch is not None:
        p.n_ubatch = args.ubatch
    if args.poll is not None:
        p.cpuparams.poll = args.poll
        p.cpuparams_batch.poll = args.poll
    if args.flash_attn is not None:
        p.flash_attn_type = _FLASH_ATTN[args.flash_attn]
    if args.kv_type is not None:
        p.cache_type_k = _KV_TYPES[args.kv_type]
        p.cache_type_v = _KV_TYPES[args.kv_type]
    if args.cache_reuse is not None:
        p.n_cache_reuse = args.cache_reuse
    if args.draft is not None:
        import xllamacpp as xlc

        # Speculative decoding: the draft proposes tokens, the model checks them in one batch.
        p.speculative.types = [xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
        p.speculative.draft.mparams.path = str(args.draft)
        p.speculative.draft.cpuparams.n_threads = args.threads
        p.speculative.draft.cpuparams_batch.n_threads = args.threads


def main(argv: list[str] | None = None) -> int:
    """Serve one GGUF model with the embedded llama.cpp server until stopped."""
    args = _parse_args(argv)
    stop = threading.Event()
    if args.die_with_parent:
        _die_with_parent(stop, args.parent_pid)
    model: Path = args.model
    if not model.is_file():
        print(f"error: model file not found: {model}", file=sys.stderr, flush=True)
        return 1
    try:
        import xllamacpp as xlc
    except ImportError:
        print(
            "error: the embedded runtime is not installed: pip install 'drpo[embedded]'",
            file=sys.stderr,
            flush=True,
        )
        return 1

    params = xlc.CommonParams()
    params.model.path = str(model)
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.slots
    # One KV cache shared by all slots: a lone long request may use all of n_ctx, instead of a
    # fixed n_ctx / slots each.
    params.kv_unified = True
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    _apply_tuning(params, args)
    # llama.cpp logs every request at its default level 3; 1 keeps errors only, so the log file
    # of a long run stays small.
    params.verbosity = 3 if args.verbose else 1

    # Loading blocks in C++ and Python signal handlers would only run afterwards; until the
    # server exists, SIGTERM/SIGINT simply end the process (there is nothing to clean up yet).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if stop.is_set():
        return 0
    try:
        server = xlc.Server(params)
    except RuntimeError as exc:
        # llama.cpp has already logged the specific cause on stderr.
        print(f"error: the llama.cpp server did not start: {exc}", file=sys.stderr, flush=True)
        return 1

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    address = str(server.listening_address) or f"http://{args.host}:{args.port}"
    print(f"ready {address}", flush=True)
    stop.wait()
    # Destroy the server explicitly, while the interpreter is intact: it joins its threads.
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
