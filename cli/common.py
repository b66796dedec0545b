"""What every drpo command shares: one-line errors with their exit codes, and `--set` parsing.

Every failure a user can cause ends with one `error: …` line on stderr and exit code 2; a paused
run exits with 3 and says how to resume; Ctrl-C exits with 130.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from drpo.backends.errors import CredentialError, LLMError
from drpo.checkpoints.store import RunStore, StoreError
from drpo.data.loaders import DataFileError
from drpo.graph.api import RunError, RunPaused
from drpo.graph.inference import PromptFileError
from drpo.state.settings import ConfigError

EXIT_BAD_INPUT = 2
EXIT_PAUSED = 3
EXIT_INTERRUPTED = 130

err = Console(stderr=True)

# Errors whose message is already one line written for the user.
_USER_ERRORS = (
    ConfigError,
    DataFileError,
    RunError,
    StoreError,
    CredentialError,
    LLMError,
    PromptFileError,
)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `error: message` and return the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def user_errors(interrupted: str | None = None) -> Iterator[None]:
    """Turn every expected failure into one line and an exit code, never a traceback.

    With `interrupted`, Ctrl-C prints that line and exits with 130; without it, Ctrl-C goes
    on up to a caller that knows what to say.
    """
    try:
        yield
    except typer.Exit:
        raise  # an exit already decided on (click's Exit is a RuntimeError)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        err.print(f"[yellow]{escape(interrupted)}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except RunPaused as exc:
        err.print(f"[yellow]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PAUSED) from None
    except _USER_ERRORS as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
    except ImportError as exc:
        raise fail(f"missing component: {exc}") from None
    except RuntimeError as exc:
        # Model-file and embedded-server errors are RuntimeErrors with one-line messages.
        raise fail(str(exc)) from None


def parse_assignment(text: str) -> dict[str, Any]:
    """`a.b.c=value` → {"a": {"b": {"c": value}}}; the value is JSON when it parses as JSON."""
    key, sep, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not sep or not parts:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    result: dict[str, Any] = {}
    node = result
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return result


def open_store(store: Path) -> RunStore:
    """Open an existing run store; a missing one is a RunError, not a new file."""
    if not store.exists():
        raise RunError(f"run store not found: {store}")
    return RunStore(store)


def load_run(store: Path, run_id: str) -> tuple[RunStore, dict[str, Any]]:
    """The store and a run's row, or a RunError when the run does not exist."""
    db = open_store(store)
    row = db.run(run_id)
    if row is None:
        raise RunError(f"no run {run_id!r} in {store}")
    return db, row
