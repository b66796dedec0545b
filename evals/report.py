"""Write reports: one self-contained HTML file (jinja2, plots inlined as base64 PNG) and Markdown.

`write_run_report` covers an optimization run (reward over depth, the beam tree, prompt diffs per
transition, per-aspect scores, cost, and the evaluations of the run); `write_eval_report` covers
an evaluation (per-aspect means per condition, pairwise win rates with intervals, lengths, judge
bias probes, and every answer with its scores).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2

from drpo.checkpoints.store import RunStore
from drpo.evals import plots
from drpo.evals.records import eval_row
from drpo.evals.run_analysis import analyse_run
from drpo.evals.summary import EvalSummary, summarize

TEMPLATE_DIR = Path(__file__).parent


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(value: tuple[float, float] | None) -> str:
    return "–" if value is None else f"[{value[0]:.2f}, {value[1]:.2f}]"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "–"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(text: str | None, limit: int = 90) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def environment() -> jinja2.Environment:
    """The Jinja environment of the report templates, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly, not blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_number, ci=_ci, when=_when, oneline=_one_line, md=_md_cell)
    return env


def _write(directory: Path, stem: str, html: str, markdown: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    html_path = directory / f"{stem}.html"
    md_path = directory / f"{stem}.md"
    html_path.write_text(html, encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return html_path, md_path


def evaluations_of(store: RunStore, run_id: str) -> list[EvalSummary]:
    """Every evaluation of a run, oldest first."""
    if "eval_runs" not in store.db.table_names():
        return []
    ids = [
        r["id"]
        for r in store.db["eval_runs"].rows_where("drpo_run = ?", [run_id], order_by="created_at")
    ]
    return [summarize(store, eval_id) for eval_id in ids]


def write_run_report(store: RunStore, run_id: str, directory: Path) -> tuple[Path, Path]:
    """Write `RUN.html` and `RUN.md` for an optimization run into `directory`."""
    analysis = analyse_run(store, run_id)
    context = {
        "a": analysis,
        "evaluations": evaluations_of(store, run_id),
        "images": {
            "reward": plots.reward_over_depth(analysis),
            "aspects": plots.aspects_over_depth(analysis),
        },
        "generated": _when(dt.datetime.now(tz=dt.UTC).timestamp()),
    }
    env = environment()
    return _write(
        directory,
        f"run-{run_id}",
        env.get_template("run_report.html.j2").render(**context),
        env.get_template("run_report.md.j2").render(**context),
    )


def write_eval_report(store: RunStore, eval_id: str, directory: Path) -> tuple[Path, Path]:
    """Write `EVAL.html` and `EVAL.md` for an evaluation into `directory`."""
    summary = summarize(store, eval_id)
    row = eval_row(store, eval_id) or {}
    context = {
        "s": summary,
        "row": row,
        "images": {
            "aspects": plots.aspect_means(summary),
            "wins": plots.win_rates(summary),
            "length": plots.length_vs_score(summary),
        },
        "generated": _when(dt.datetime.now(tz=dt.UTC).timestamp()),
    }
    env = environment()
    return _write(
        directory,
        eval_id,
        env.get_template("eval_report.html.j2").render(**context),
        env.get_template("eval_report.md.j2").render(**context),
    )
