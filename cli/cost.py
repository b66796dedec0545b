"""`drpo cost RUN`: what a run spent, per role and per stage and level, from the run store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from drpo.checkpoints.store import RunStore
from drpo.cli.common import load_run, user_errors
from drpo.cli.options import StoreOption
from drpo.state.settings import DEFAULT_STORE, ROLES

SUMMED = (
    "calls",
    "cache_hits",
    "errors",
    "invalid",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "seconds",
)


def level_name(row: dict[str, Any]) -> str:
    """The schedule step a cost row belongs to, as the progress lines name it."""
    stage = row["stage"]
    if stage == "examples":
        return "stage A"
    if stage == "search":
        return f"level {row['level']}" if row["level"] is not None else "search"
    if stage == "validate":
        return "validation"
    return stage or "(untagged)"


def group(
    rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> dict[str, dict[str, Any]]:
    """Sum the cost rows by `key`, keeping the first-seen order; also the wall-clock span."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = key(row)
        total = groups.setdefault(
            name, {**dict.fromkeys(SUMMED, 0), "first_started": None, "last_finished": None}
        )
        for field in SUMMED:
            total[field] += row[field] or 0
        starts = [t for t in (total["first_started"], row["first_started"]) if t is not None]
        ends = [t for t in (total["last_finished"], row["last_finished"]) if t is not None]
        total["first_started"] = min(starts, default=None)
        total["last_finished"] = max(ends, default=None)
    return groups


def wall(total: dict[str, Any]) -> float:
    """The wall-clock seconds from a group's first call to its last."""
    if total["first_started"] is None or total["last_finished"] is None:
        return 0.0
    return max(0.0, float(total["last_finished"] - total["first_started"]))


def level_line(store: RunStore, run_id: str, level: int) -> str:
    """`this level: 9 calls, 1200+300 tokens, 4.1 s` for the progress display."""
    rows = [r for r in store.cost_breakdown(run_id) if r["stage"] == "search"]
    total = group((r for r in rows if r["level"] == level), lambda _: "level").get("level")
    if total is None:
        return "this level: no calls"
    cached = f" (+{total['cache_hits']} cached)" if total["cache_hits"] else ""
    return (
        f"this level: {total['calls']} calls{cached}, "
        f"{total['prompt_tokens']}+{total['completion_tokens']} tokens, {wall(total):.1f} s"
    )


def cost_table(title: str, groups: dict[str, dict[str, Any]], first: str) -> Table:
    """A table of calls, tokens and time, one row per group."""
    table = Table(
        Column(first, no_wrap=True),
        "calls",
        "cached",
        "failed",
        "prompt tok",
        "prefix-cached",
        "output tok",
        "model s",
        "wall s",
        title=title,
    )
    for name, total in groups.items():
        table.add_row(
            name,
            str(total["calls"]),
            str(total["cache_hits"]),
            str(total["errors"] + total["invalid"]),
            str(total["prompt_tokens"]),
            str(total["cached_tokens"]),
            str(total["completion_tokens"]),
            f"{total['seconds']:.1f}",
            f"{wall(total):.1f}",
        )
    return table


def render_cost(store: RunStore, run_id: str, out: Console) -> None:
    """Print a run's cost per role and per stage and level."""
    rows = store.cost_breakdown(run_id)
    if not rows:
        out.print(f"run {run_id} has made no model calls yet")
        return
    everything = group(rows, lambda _: "run")["run"]
    ordered = sorted(rows, key=lambda r: ROLES.index(r["role"]) if r["role"] in ROLES else 9)
    out.print(cost_table("per role", group(ordered, lambda r: r["role"]), "role"))
    out.print(cost_table("per stage and level", group(rows, level_name), "step"))
    run = store.run(run_id) or {}
    active = run.get("active_seconds")
    out.print(
        f"run {run_id}: {everything['calls']} paid calls, {everything['cache_hits']} cache hits "
        f"(never counted as spent), "
        f"{everything['prompt_tokens'] + everything['completion_tokens']} tokens "
        f"({everything['cached_tokens']} prompt tokens reused from the server's prefix cache); "
        f"{everything['seconds']:.1f} s of model time"
        + (f", {active:.1f} s of wall time running" if active else ""),
        highlight=False,
    )


def cost_command(
    run_id: Annotated[str, typer.Argument(help="the run")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Show what a run spent: calls, tokens and time per role and per stage and level."""

    with user_errors():
        db, _ = load_run(store, run_id)
        try:
            render_cost(db, run_id, Console())
        finally:
            db.close()
