"""Run the `drpo` command in the test's own process, through typer's CliRunner.

Starting a new `drpo` process costs a fresh import of langgraph, langchain and pydantic, which
is most of an integration test's time. This runs the same entry point (`main`, with its
one-line error handling for bad flags) on argv, with stdin, stdout, stderr and the environment
swapped by CliRunner, and returns what `subprocess.run(..., capture_output=True, text=True)`
would: the exit code and both streams.

Tests that need a real process (killing or signalling it, two processes claiming a run, a
terminal, a server's lifecycle) still start one with `stub_runs.DRPO`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from unittest import mock

from typer.testing import CliRunner

from drpo.cli.app import main


def run_drpo(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`drpo ARGS` as a completed process; `env`, like subprocess's, is the whole environment."""
    argv = ["drpo", *map(str, args)]
    changes: dict[str, str | None] | None = None
    if env is not None:
        # CliRunner only sets variables; a variable left out of a whole environment is unset.
        changes = {name: None for name in os.environ if name not in env}
        changes.update(env)
    runner = CliRunner()
    chdir = contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext()
    with chdir, runner.isolation(input=input, env=changes) as (stdout, stderr, _):
        with mock.patch.object(sys, "argv", argv):
            code = _exit_code()
        out = stdout.getvalue().decode("utf-8", "replace")
        err = stderr.getvalue().decode("utf-8", "replace")
    return subprocess.CompletedProcess(argv, code, out, err)


def _exit_code() -> int:
    """Run `main` as the interpreter would: an uncaught exception is a traceback and exit 1."""
    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0
