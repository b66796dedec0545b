"""The `drpo` command line: optimize, resume, inspect and export runs, manage the local model.

Every failure a user can cause (config, data, flags, unknown runs, unreachable endpoints) ends
with one `error: …` line and exit code 2; a paused run exits with 3 and says how to resume.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from drpo.backends.errors import CredentialError, LLMError
from drpo.checkpoints.store import RunStore, StoreError
from drpo.data.loaders import DataFileError
from drpo.graph.api import RunError, RunPaused, optimize_async, resume_async
from drpo.graph.cli_model import model_app
from drpo.state.settings import ROLES, ConfigError, Settings, load_settings
from drpo.state.types import RunResult

app = typer.Typer(
    help="drpo: align a language model without training it (DRPO prompt search).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(model_app, name="model", help="Install, list and serve the embedded local models.")
console = Console(stderr=True)
out = Console()

EXIT_BAD_INPUT = 2
EXIT_PAUSED = 3
DEFAULT_STORE = Path("drpo-runs/runs.db")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn every expected failure into one line and an exit code, never a traceback."""
    try:
        yield
    except RunPaused as exc:
        console.print(f"[yellow]{exc}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PAUSED) from None
    except (ConfigError, DataFileError, RunError, StoreError, CredentialError, LLMError) as exc:
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
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    result: dict[str, Any] = {}
    node = result
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return result


def build_overrides(**flags: Any) -> dict[str, Any]:
    from drpo.state.settings import deep_merge

    overrides: dict[str, Any] = {}
    search = {
        k: flags[k] for k in ("width", "actions", "depth", "batch_size") if flags[k] is not None
    }
    if search:
        overrides["search"] = search
    data = {k: str(flags[k]) for k in ("train", "validation", "examples") if flags[k] is not None}
    if data:
        overrides["data"] = data
    for role in ROLES:
        role_flags: dict[str, Any] = {}
        if flags["endpoint"] is not None:
            role_flags["endpoint"] = flags["endpoint"]
        if flags["model"] is not None:
            role_flags["model"] = flags["model"]
        if flags["api_key_env"] is not None:
            role_flags["api_key_env"] = flags["api_key_env"]
        if role_flags:
            overrides[role] = role_flags
    if flags["store"] is not None:
        overrides["store"] = str(flags["store"])
    if flags["checkpoints"] is not None:
        overrides["checkpoints"] = str(flags["checkpoints"])
    if flags["no_cache"]:
        overrides["cache"] = False
    if flags["skip_examples"]:
        overrides["examples"] = {"enabled": False}
    if flags["seed"] is not None:
        overrides["seed"] = flags["seed"]
    if flags["max_concurrency"] is not None:
        overrides["max_concurrency"] = flags["max_concurrency"]
    for assignment in flags["set_values"] or []:
        overrides = deep_merge(overrides, parse_assignment(assignment))
    return overrides


class ProgressPrinter:
    """Prints the search's progress: stages, each level's beam, and the cost so far."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.run_id = ""
        self.examples_done = 0
        self.nodes = 0

    def cost(self) -> str:
        try:
            store = RunStore(self.store_path)
            cost = store.run_cost(self.run_id)
            store.close()
        except StoreError:
            return ""
        hits = cost.get("cache_hits") or 0
        return (
            f"{cost['calls']} calls ({hits} cached), "
            f"{cost['prompt_tokens']}+{cost['completion_tokens']} tokens"
        )

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.run_id = event["run_id"]
            console.print(f"run [bold]{self.run_id}[/] (store: {event['store']})", highlight=False)
        elif kind == "node":
            node = event["node"]
            if node == "optimize_example":
                self.examples_done += 1
                console.print(f"  stage A: example {self.examples_done} optimized · {self.cost()}")
            elif node == "collect_examples":
                console.print("stage A done; stage B: searching system prompts")
            elif node == "start_validation":
                console.print("validating the best prompts on held-out queries")
        elif kind == "level":
            beam = ", ".join(f"{cid} {value:.2f}" for cid, value, _ in event["beam"])
            unscored = f" ({event['unscored']} unscored)" if event["unscored"] else ""
            console.print(
                f"  level {event['level']}/{event['depth_limit']}: {event['children']} candidates"
                f"{unscored} · beam [{beam}] · {self.cost()}",
                highlight=False,
            )


def print_result(result: RunResult, store: Path) -> None:
    out.print("\n[bold]Final alignment prompt[/]\n", highlight=False)
    out.print(result.prompt, highlight=False, markup=False)
    value = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    out.print(
        f"\nrun {result.run_id}: {result.status}; train value {value(result.train_value)}, "
        f"validation {value(result.validation_value)} "
        f"(starting prompt: {value(result.baseline_validation_value)}); "
        f"{result.calls} calls, {result.prompt_tokens}+{result.completion_tokens} tokens",
        highlight=False,
    )
    out.print(
        f"saved in {store} — export with: drpo export {result.run_id} --format md",
        highlight=False,
    )


def _run(coro_factory: Callable[[], Any]) -> Any:
    try:
        return asyncio.run(coro_factory())
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the run is saved — resume it with drpo resume RUN[/]")
        raise typer.Exit(130) from None


@app.command()
def optimize(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="default, quick or paper")] = None,
    width: Annotated[int | None, typer.Option(help="beam width")] = None,
    actions: Annotated[int | None, typer.Option(help="candidate prompts per expansion")] = None,
    depth: Annotated[int | None, typer.Option(help="search depth (levels)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training queries per level")] = None,
    endpoint: Annotated[str | None, typer.Option(help="endpoint for all roles")] = None,
    model: Annotated[str | None, typer.Option(help="model for all roles")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="env var holding the API key")] = None,
    train: Annotated[Path | None, typer.Option(help="training queries file")] = None,
    validation: Annotated[Path | None, typer.Option(help="validation queries file")] = None,
    examples: Annotated[Path | None, typer.Option(help="in-context examples file")] = None,
    store: Annotated[Path | None, typer.Option(help="run store database")] = None,
    checkpoints: Annotated[Path | None, typer.Option(help="checkpoint database")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for the query order")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="parallel model calls")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="don't reuse other runs' replies")
    ] = False,
    skip_examples: Annotated[bool, typer.Option("--skip-examples", help="skip stage A")] = False,
    set_values: Annotated[
        list[str] | None, typer.Option("--set", help="any setting, e.g. --set judge.max_tokens=300")
    ] = None,
) -> None:
    """Optimize an alignment prompt (stage A examples, then stage B beam search)."""
    with user_errors():
        overrides = build_overrides(
            width=width,
            actions=actions,
            depth=depth,
            batch_size=batch_size,
            endpoint=endpoint,
            model=model,
            api_key_env=api_key_env,
            train=train,
            validation=validation,
            examples=examples,
            store=store,
            checkpoints=checkpoints,
            seed=seed,
            max_concurrency=max_concurrency,
            no_cache=no_cache,
            skip_examples=skip_examples,
            set_values=set_values,
        )
        settings = load_settings(config, preset, overrides)
        describe_settings(settings)
        printer = ProgressPrinter(settings.store)
        result = _run(lambda: optimize_async(settings, on_event=printer))
        print_result(result, settings.store)


def describe_settings(settings: Settings) -> None:
    s = settings.search
    roles = {r: settings.role(r) for r in ROLES}
    names = sorted({f"{r.model}@{r.endpoint}" for r in roles.values()})
    console.print(
        f"preset {settings.preset}: width {s.width}, {s.actions} actions, depth {s.depth}, "
        f"{s.batch_size} queries/level, stage A "
        f"{'off' if not settings.examples.enabled else f'{settings.examples.rounds} round(s)'}; "
        f"models: {', '.join(names)}",
        highlight=False,
    )


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="the run to continue")],
    store: Annotated[Path, typer.Option(help="run store database")] = DEFAULT_STORE,
) -> None:
    """Continue a paused, interrupted or killed run from its last checkpoint."""
    with user_errors():
        printer = ProgressPrinter(store)
        printer.run_id = run_id
        console.print(f"resuming run {run_id}", highlight=False)
        result = _run(lambda: resume_async(run_id, store_path=store, on_event=printer))
        print_result(result, store)


def open_store(store: Path) -> RunStore:
    if not store.exists():
        raise RunError(f"run store not found: {store}")
    return RunStore(store)


@app.command()
def runs(
    store: Annotated[Path, typer.Option(help="run store database")] = DEFAULT_STORE,
) -> None:
    """List runs: id, status, best value, cost."""
    with user_errors():
        db = open_store(store)
        table = Table("run", "status", "preset", "train value", "validation", "calls", "tokens")
        for row in db.runs():
            cost = db.run_cost(row["id"])
            fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
            table.add_row(
                row["id"],
                row["status"],
                row["preset"],
                fmt(row["train_value"]),
                fmt(row["validation_value"]),
                str(cost["calls"]),
                str(cost["prompt_tokens"] + cost["completion_tokens"]),
            )
        out.print(table)


def load_run(store: Path, run_id: str) -> tuple[RunStore, dict[str, Any]]:
    db = open_store(store)
    row = db.run(run_id)
    if row is None:
        raise RunError(f"no run {run_id!r} in {store}")
    return db, row


@app.command()
def show(
    run_id: Annotated[str, typer.Argument()],
    store: Annotated[Path, typer.Option(help="run store database")] = DEFAULT_STORE,
) -> None:
    """Show a run's best prompt, its examples and the lineage of the prompt."""
    with user_errors():
        db, row = load_run(store, run_id)
        best = row["best_candidate_id"]
        out.print(f"[bold]run {run_id}[/] · {row['status']} · preset {row['preset']}")
        if best is None:
            out.print("no candidate has been scored yet")
            return
        out.print("\n[bold]Best prompt[/]", highlight=False)
        prompt = row["final_prompt"] or db.db["candidates"].get(best)["prompt"]
        out.print(prompt, markup=False, highlight=False)
        out.print("\n[bold]Lineage[/]")
        chain: list[dict[str, Any]] = []
        current: str | None = best
        while current is not None:
            candidate = db.db["candidates"].get(current)
            chain.append(candidate)
            current = candidate["parent_id"]
        for candidate in reversed(chain):
            value = candidate["value"]
            out.print(
                f"  level {candidate['level']} {candidate['id']}: value "
                f"{'n/a' if value is None else f'{value:.2f}'}"
                f"{' (carried)' if candidate['carried'] else ''}",
                highlight=False,
            )
        examples = list(db.db["examples"].rows_where("run_id = ?", [run_id]))
        if examples:
            out.print("\n[bold]Optimized examples[/]")
            for example in examples:
                out.print(
                    f"  {example['example_id']}: reward {example['original_reward']} → "
                    f"{example['reward']} after {example['rounds']} round(s)",
                    highlight=False,
                )


@app.command()
def export(
    run_id: Annotated[str, typer.Argument()],
    format: Annotated[str, typer.Option("--format", "-f", help="json, md or txt")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file (default stdout)")
    ] = None,
    store: Annotated[Path, typer.Option(help="run store database")] = DEFAULT_STORE,
) -> None:
    """Export the alignment prompt with provenance: models, settings, scores, examples."""
    from drpo.graph.export import render_export

    with user_errors():
        if format not in ("json", "md", "txt"):
            raise ConfigError(f"unknown export format {format!r} (use json, md or txt)")
        db, row = load_run(store, run_id)
        text = render_export(db, row, format)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            console.print(f"wrote {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
