"""`drpo judge-check`: run the judge on the project-written answer pairs and print its accuracy.

Also the short version `drpo optimize --judge-check N` runs before a search. The logic lives in
drpo.evals.judge_check; this module parses flags and prints.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from drpo.cli.common import parse_assignment, user_errors
from drpo.cli.options import ConfigOption, PresetOption
from drpo.evals.judge_check import (
    KINDS,
    METHODS,
    NEAR_CHANCE_ACCURACY,
    Accuracy,
    CheckResults,
    JudgeCheckReport,
    Method,
    Mode,
    PairwiseReport,
    check_judge,
    shipped_pairs,
    stratified_subset,
)
from drpo.state.settings import ConfigError, Settings, deep_merge, load_settings

err = Console(stderr=True)
out = Console()
INTERRUPTED = "interrupted; the judge's replies so far are cached in the run store"
MODES: tuple[Mode, ...] = ("integer", "probability")
METHOD_HELP = (
    "absolute: each answer scored alone with the search's judge prompt (the search's reward); "
    "pairwise: both answers compared in both orders with `drpo eval`'s pairwise judge (shows "
    "position bias); both (default): the search and the evaluation each rely on one of them, "
    "so a check of the judge covers both; the reply cache makes a repeat free"
)


def judge_check_command(
    config: ConfigOption = None,
    preset: PresetOption = None,
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
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "both",
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
        results = run_check(settings, size, seed, tuple(kinds or ()), checked_method(method))
        if results.absolute is not None:
            print_report(results.absolute, results.seconds["absolute"])
        if results.pairwise is not None:
            print_pairwise(results.pairwise, results.seconds["pairwise"])


def checked_method(value: str) -> Method:
    """`--method` as one of METHODS, or a one-line configuration error."""
    for method in METHODS:
        if value == method:
            return method
    raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {value!r}")


def run_check(
    settings: Settings,
    size: int | None,
    seed: int,
    kinds: tuple[str, ...] = (),
    method: Method = "absolute",
) -> CheckResults:
    """Judge `size` pairs (all when None) of `kinds` (all when empty) by `method`, with a
    progress note per tenth."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {unknown[0]!r}")
    pairs = [p for p in shipped_pairs() if not kinds or p.kind in kinds]
    if size is not None and not 1 <= size <= len(pairs):
        raise ConfigError(f"--size must be between 1 and {len(pairs)}, got {size}")
    chosen = stratified_subset(pairs, size or len(pairs), seed)
    # Two calls per pair and method: both answers scored, or both orders compared.
    total, done = 2 * len(chosen) * (2 if method == "both" else 1), 0

    def on_answer() -> None:
        nonlocal done
        done += 1
        if done == total or done % max(1, total // 10) == 0:
            err.print(f"judge calls {done}/{total}", highlight=False)

    err.print(
        f"judge-check ({method}): {len(chosen)} pairs, {total} judge calls "
        f"({settings.judge.model})",
        highlight=False,
    )
    check_id = f"judge-check-{time.strftime('%Y%m%d-%H%M%S')}"
    return asyncio.run(
        check_judge(settings, chosen, check_id=check_id, method=method, on_answer=on_answer)
    )


def accuracy_cell(result: Accuracy) -> str:
    """`83% [70%, 93%] (50/60)`: the rate, its interval and the counts (`(48 right, 4 tied, of
    60)` when a tie counts half)."""
    if result.rate is None:
        return "n/a"
    ci = f" [{result.ci[0]:.0%}, {result.ci[1]:.0%}]" if result.ci else ""
    if result.tie_credit:
        return (
            f"{result.rate:.0%}{ci} ({result.right} right, {result.ties} tied, of {result.judged})"
        )
    return f"{result.rate:.0%}{ci} ({result.right}/{result.judged})"


def percent(value: float | None) -> str:
    """`83%`, or `n/a` for a share that could not be measured."""
    return "n/a" if value is None else f"{value:.0%}"


def accuracy_table(
    title: str, overall: dict[Mode, Accuracy], by_kind: dict[Mode, dict[str, Accuracy]]
) -> Table:
    """Accuracy and tie rate in both modes, overall and per kind."""
    table = Table(title=title)
    table.add_column("kind")
    for mode in MODES:
        table.add_column(f"{mode} accuracy")
        table.add_column(f"{mode} ties")
    rows = [("all", overall)]
    rows += [(kind, {m: by_kind[m][kind] for m in MODES}) for kind in by_kind["integer"]]
    for name, results in rows:
        cells = []
        for mode in MODES:
            tie = results[mode].tie_rate
            cells += [accuracy_cell(results[mode]), "n/a" if tie is None else f"{tie:.0%}"]
        table.add_row(name, *cells)
    return table


def print_report(report: JudgeCheckReport, seconds: float) -> None:
    """Both modes overall and per kind, then what the figures do not cover."""
    out.print(
        accuracy_table(
            "judge-check, absolute: better answer scored higher (95 % bootstrap CI)",
            {m: report.overall(m) for m in MODES},
            {m: report.by_kind(m) for m in MODES},
        )
    )
    unjudged = sum(1 for o in report.outcomes if o.verdict("integer") is None)
    out.print(
        f"{len(report.outcomes)} pairs in {seconds:.0f} s; {unjudged} without a usable judge "
        "reply. Each answer is scored alone (the search's reward), so answer order cannot sway "
        "it; the pairwise section measures position bias. The set was written by the drpo "
        "project.",
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


def print_pairwise(report: PairwiseReport, seconds: float) -> None:
    """The pairwise section: both modes overall and per kind, then the position figures."""
    out.print(
        accuracy_table(
            "judge-check, pairwise (both orders): better answer preferred, a tie counts half "
            "(95 % bootstrap CI)",
            {m: report.overall(m) for m in MODES},
            {m: report.by_kind(m) for m in MODES},
        )
    )
    position = report.position()
    mean_first = report.mean_first_probability()
    unjudged = sum(1 for o in report.outcomes if o.verdict("integer") is None)
    out.print(
        f"Position consistency {percent(position.consistency)} ({position.consistent_pairs}/"
        f"{position.judged_pairs} pairs whose two orders picked the same answer, or both a "
        f"tie); first-shown answer picked in {percent(position.first_rate)} of "
        f"{position.decisive} decisive verdicts (50% = no position bias); mean P(first-shown "
        f"preferred) {'n/a' if mean_first is None else f'{mean_first:.2f}'}. "
        f"{len(report.outcomes)} pairs in {seconds:.0f} s, {unjudged} without a usable verdict "
        "in both orders.",
        highlight=False,
    )
    if report.fallbacks:
        out.print(
            f"[yellow]warning:[/] {len(report.fallbacks)} pairwise verdict(s) have no probability "
            f"(integer mode only): {report.fallbacks[0]}",
            highlight=False,
        )
    rate = report.overall(report.headline_mode).rate
    if rate is None or rate < NEAR_CHANCE_ACCURACY:
        out.print(
            f"[yellow]warning:[/] the pairwise judge is near chance: {report.headline_mode}-mode "
            f"accuracy {percent(rate)} (below {NEAR_CHANCE_ACCURACY:.0%}); `drpo eval`'s win rates "
            "will carry little signal",
            highlight=False,
        )


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
    """`drpo optimize --judge-check N`: a small check first; one line, and a warning near chance.

    Absolute only: that is the judge prompt whose scores the search's reward is made of.
    """
    report = run_check(settings, size, settings.seed).absolute
    assert report is not None  # the absolute method always fills it
    mode = report.headline_mode
    err.print(
        f"judge-check ({mode} scores): {accuracy_cell(report.overall(mode))} of pairs ordered "
        "right",
        highlight=False,
    )
    if report.near_chance():
        err.print(f"[yellow]warning:[/] {near_chance_line(report)}", highlight=False)
