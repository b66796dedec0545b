"""`drpo judge-check`: run the judge on the project-written answer pairs and print its accuracy.

Also the short version `drpo optimize --judge-check N` runs before a search. The logic lives in
drpo.evals.judge_check; this module parses flags and prints.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from drpo.cli.common import parse_assignment, user_errors
from drpo.evals.judge_check import (
    KINDS,
    NEAR_CHANCE_ACCURACY,
    Accuracy,
    JudgeCheckReport,
    Mode,
    check_judge,
    shipped_pairs,
    stratified_subset,
)
from drpo.state.settings import ConfigError, Settings, deep_merge, load_settings

err = Console(stderr=True)
out = Console()
INTERRUPTED = "interrupted; the judge's replies so far are cached in the run store"


def judge_check_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="default, quick or paper")] = None,
    size: Annotated[
        int | None, typer.Option(help="judge a stratified subset of this many pairs")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the subset")] = 0,
    kinds: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", help=f"judge only pairs of this kind (repeatable): {', '.join(KINDS)}"
        ),
    ] = None,
    set_values: Annotated[
        list[str] | None, typer.Option("--set", help="any setting, e.g. --set judge.model=...")
    ] = None,
) -> None:
    """Check that the judge scores a known-worse answer below a better one."""
    with user_errors(INTERRUPTED):
        overrides: dict[str, object] = {}
        for assignment in set_values or []:
            overrides = deep_merge(overrides, parse_assignment(assignment))
        settings = load_settings(config, preset, overrides)
        started = time.monotonic()
        report = run_check(settings, size, seed, tuple(kinds or ()))
        print_report(report, time.monotonic() - started)


def run_check(
    settings: Settings, size: int | None, seed: int, kinds: tuple[str, ...] = ()
) -> JudgeCheckReport:
    """Judge `size` pairs (all when None) of `kinds` (all when empty), with a progress note per
    tenth."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {unknown[0]!r}")
    pairs = [p for p in shipped_pairs() if not kinds or p.kind in kinds]
    if size is not None and not 1 <= size <= len(pairs):
        raise ConfigError(f"--size must be between 1 and {len(pairs)}, got {size}")
    chosen = stratified_subset(pairs, size or len(pairs), seed)
    total, done = 2 * len(chosen), 0

    def on_answer() -> None:
        nonlocal done
        done += 1
        if done == total or done % max(1, total // 10) == 0:
            err.print(f"judged {done}/{total} answers", highlight=False)

    err.print(
        f"judge-check: {len(chosen)} pairs, {total} judge calls ({settings.judge.model})",
        highlight=False,
    )
    check_id = f"judge-check-{time.strftime('%Y%m%d-%H%M%S')}"
    return asyncio.run(check_judge(settings, chosen, check_id=check_id, on_answer=on_answer))


def accuracy_cell(result: Accuracy) -> str:
    """`83% [70%, 93%] (50/60)`: the rate, its interval and the counts."""
    if result.rate is None:
        return "n/a"
    ci = f" [{result.ci[0]:.0%}, {result.ci[1]:.0%}]" if result.ci else ""
    return f"{result.rate:.0%}{ci} ({result.right}/{result.judged})"


def print_report(report: JudgeCheckReport, seconds: float) -> None:
    """Both modes overall and per kind, then what the figures do not cover."""
    modes: tuple[Mode, ...] = ("integer", "probability")
    table = Table(title="judge-check: better answer scored higher (95 % bootstrap CI)")
    table.add_column("kind")
    for mode in modes:
        table.add_column(f"{mode} accuracy")
        table.add_column(f"{mode} ties")
    rows = [("all", {m: report.overall(m) for m in modes})]
    rows += [
        (kind, {m: report.by_kind(m)[kind] for m in modes}) for kind in report.by_kind("integer")
    ]
    for name, results in rows:
        cells = []
        for mode in modes:
            tie = results[mode].tie_rate
            cells += [accuracy_cell(results[mode]), "n/a" if tie is None else f"{tie:.0%}"]
        table.add_row(name, *cells)
    out.print(table)
    unjudged = sum(1 for o in report.outcomes if o.verdict("integer") is None)
    out.print(
        f"{len(report.outcomes)} pairs in {seconds:.0f} s; {unjudged} without a usable judge "
        "reply. Position consistency: n/a, each answer is scored alone (the search's reward), "
        "so answer order cannot sway it. The set was written by the drpo project.",
        highlight=False,
    )
    if report.fallbacks:
        out.print(
            f"[yellow]warning:[/] {len(report.fallbacks)} answer(s) have integer scores only: "
            f"{report.fallbacks[0]}",
            highlight=False,
        )
    if report.near_chance():
        out.print(f"[yellow]warning:[/] {near_chance_line(report)}", highlight=False)


def near_chance_line(report: JudgeCheckReport) -> str:
    """The one-line warning for a judge whose accuracy is near a coin toss."""
    mode = report.headline_mode
    rate = report.overall(mode).rate
    shown = "n/a" if rate is None else f"{rate:.0%}"
    return (
        f"the judge is near chance: {mode}-mode accuracy {shown} on the judge-check set "
        f"(below {NEAR_CHANCE_ACCURACY:.0%}); the search's reward will carry little signal"
    )


def pre_search_check(settings: Settings, size: int) -> None:
    """`drpo optimize --judge-check N`: a small check first; one line, and a warning near chance."""
    report = run_check(settings, size, settings.seed)
    mode = report.headline_mode
    err.print(
        f"judge-check ({mode} scores): {accuracy_cell(report.overall(mode))} of pairs ordered "
        "right",
        highlight=False,
    )
    if report.near_chance():
        err.print(f"[yellow]warning:[/] {near_chance_line(report)}", highlight=False)
