"""The progress display of `drpo optimize`, `resume` and `review`: one consumer of the run events.

On a terminal a rich progress bar shows calls done of the estimate, tokens, elapsed time and the
ETA, with each phase printed above it. Off a terminal (a log file, a pipe, CI) there is no bar;
instead a plain status line is printed whenever 30 s pass without one, so a log never goes quiet
for long while a slow machine works through a call.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from drpo.backends.speed_probe import ServerSpeed
from drpo.checkpoints.store import RunStore, StoreError
from drpo.cli.cost import level_line
from drpo.data.loaders import DataFileError
from drpo.graph.api import load_run_data, stored_rubric
from drpo.nodes.estimate import Estimate, describe, estimate_run
from drpo.nodes.eta import Eta, RunClock, minutes
from drpo.state.events import (
    CallFinished,
    CallStarted,
    LevelDone,
    ProposalRejected,
    ReviewNeeded,
    RunEvent,
    RunFinished,
    RunStarted,
    RunWarning,
    ServerStarted,
    SettingsAdapted,
    SpeedMeasured,
    StepFinished,
)
from drpo.state.settings import ConfigError, settings_from_stored

STATUS_EVERY = 30.0
SLOW_RUN_MINUTES = 20
SMALLER_BASE = "a smaller model for the base role (--set base.model=qwen2.5-coder-0.5b)"
console = Console(stderr=True)


def time_forecast(estimate: Estimate, speed: ServerSpeed, preset: str = "default") -> str:
    """`about 20 min expected, at most about 45 min on this machine`, with faster choices when
    the expected time is long."""
    bound = RunClock.before_start(estimate, speed)
    expected = RunClock.expected_before_start(estimate, speed)
    line = (
        f"time: {minutes(expected)} expected, at most {minutes(bound)} on this machine "
        f"(measured {speed.prefill_per_second:.0f} tok/s prefill, "
        f"{speed.decode_per_second:.1f} tok/s decode, one stream)"
    )
    if expected > SLOW_RUN_MINUTES * 60:
        choices = SMALLER_BASE if preset == "quick" else f"--preset quick, or {SMALLER_BASE}"
        line += f"\n  that is over {SLOW_RUN_MINUTES} min; faster choices: {choices}"
    return line


def adaptation_text(event: SettingsAdapted) -> str:
    """The line saying how the default search was cut to fit, then one line per change."""
    target = minutes(event.target_seconds).removeprefix("about ")
    aim = minutes(event.aim_seconds or event.target_seconds).removeprefix("about ")
    # "a quarter": the target over the aim, 1 / AIM_SHARE (nodes/adapt.py), less one.
    margin = (
        f"cut to {aim} expected, as runs take up to a quarter longer than expected; "
        if event.aim_seconds
        else ""
    )
    head = (
        f"time: {minutes(event.expected_seconds)} expected at the default settings on this "
        f"machine ({event.prefill_per_second:.0f} tok/s prefill, "
        f"{event.decode_per_second:.1f} tok/s decode); "
    )
    if event.fits:
        head += f"adapted to fit {target} ({margin}keep the full search: --no-adapt):"
    else:
        head += (
            f"even the smallest search is expected to take {minutes(event.adapted_seconds)}, "
            f"over the {aim} aimed at to fit {target}; running it "
            "(keep the full search: --no-adapt):"
        )
    changes = [
        f"  {c.setting} {'unset' if c.before is None else c.before}→{c.after}"
        for c in event.changes
    ]
    return "\n".join([head, *changes])


def eta_text(eta: Eta) -> str:
    """`ETA about 18 min (14 min to 22 min, as the search prunes itself)`; while a call
    runs past its predicted time, `ETA over about 3 min; a call has run 95 s, longer than
    expected` (the figure takes it as ending now, so it is a lower bound)."""
    if eta.overdue_call is not None:
        return (
            f"ETA over {minutes(eta.seconds)}; a call has run {eta.overdue_call:.0f} s, "
            "longer than expected"
        )
    text = f"ETA {minutes(eta.seconds)}"
    if eta.low is not None and eta.high is not None and minutes(eta.low) != minutes(eta.high):
        low, high = (minutes(end).removeprefix("about ") for end in (eta.low, eta.high))
        text += f" ({low} to {high}, as the search prunes itself)"
    return text


def stored_call(row: dict[str, Any]) -> CallFinished:
    """A stored `llm_calls` row as the event it was reported as."""
    return CallFinished(
        role=row["role"],
        model=row["model"],
        endpoint=row["endpoint"],
        outcome=row["outcome"],
        prompt_tokens=row["prompt_tokens"] or 0,
        completion_tokens=row["completion_tokens"] or 0,
        cached_tokens=row["cached_tokens"] or 0,
        seconds=row["latency"] or 0.0,
        stage=row["stage"] or "",
        level=row["level"],
    )


def stored_span(rows: list[dict[str, Any]]) -> float:
    """Seconds from the first stored request's start to the last one's end (0 without any)."""
    paid = [r for r in rows if r["outcome"] == "ok" and r["started_at"] is not None]
    if not paid:
        return 0.0
    end = max(r["started_at"] + (r["latency"] or 0.0) for r in paid)
    return float(end - min(r["started_at"] for r in paid))


def resumed_search(clock: RunClock, store: RunStore, run_id: str) -> None:
    """Give a resumed run's clock what its events told before: the stage A examples done and
    stage A's end (its search answered a query), the rejected proposals, and each level scored
    with its beam's rewards."""
    for _ in store.db.query("select 1 from examples where run_id = ?", [run_id]):
        clock.example_finished()
    if any(c["stage"] == "search" and c["role"] != "selector" for c in store.calls(run_id)):
        clock.stage_a_finished()
    scored: dict[int, int] = {}
    beams: dict[int, dict[str, float | None]] = {}
    for row in store.db.query(
        "select id, level, parent_id, rejected, level_reward, survived from candidates "
        "where run_id = ?",
        [run_id],
    ):
        if row["rejected"]:
            clock.proposal_rejected(row["level"], row["parent_id"] or "")
        elif row["level_reward"] is not None:
            scored[row["level"]] = scored.get(row["level"], 0) + 1
            if row["survived"]:
                beams.setdefault(row["level"], {})[row["id"]] = row["level_reward"]
    for level, children in scored.items():
        clock.level_finished(level, children, beams.get(level))


class ProgressPrinter:
    """Prints the search's progress: phases, each level's beam, calls, tokens and the ETA."""

    def __init__(
        self,
        store_path: Path,
        summary: str = "",
        estimate: Estimate | None = None,
        preset: str = "default",
    ) -> None:
        self.store_path = store_path
        self.preset = preset
        self.summary = summary
        self.run_id = ""
        self.examples_done = 0
        self.clock = RunClock(estimate) if estimate is not None else None
        self.started = time.monotonic()
        self.last_line = self.started
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._retired: list[threading.Thread] = []
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self.calls = 0
        self.tokens = 0

    @classmethod
    def for_stored_run(cls, store_path: Path, run_id: str) -> ProgressPrinter:
        """A printer for a run that goes on (resume, review): its estimate less the calls done.

        Without a readable run (the API reports that in one line) it shows no ETA.
        """
        if not store_path.exists():  # opening would create it; resume refuses a missing store
            printer = cls(store_path)
            printer.run_id = run_id
            return printer
        try:
            store = RunStore(store_path)
            try:
                row = store.run(run_id)
                if row is None:
                    raise StoreError(f"no run {run_id!r}")
                settings = settings_from_stored(json.loads(row["settings"]))
                estimate = estimate_run(settings, load_run_data(settings), stored_rubric(row))
                clock = RunClock(estimate)
                rows = store.calls(run_id)
                clock.resumed_from([stored_call(call) for call in rows], stored_span(rows))
                resumed_search(clock, store, run_id)
            finally:
                store.close()
        except (StoreError, ConfigError, DataFileError, ValueError, OSError):
            printer = cls(store_path)
        else:
            printer = cls(store_path, estimate=estimate, preset=settings.preset)
            printer.clock = clock
        printer.run_id = run_id
        return printer

    # ---- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the bar (terminal) or the status ticker (elsewhere)."""
        with self._lock:
            if self._bar is not None or self._ticker is not None:
                return
            if console.is_terminal:
                self._bar = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    TextColumn("{task.fields[status]}"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                )
                self._task = self._bar.add_task("calls", total=None, status="")
                self._bar.start()
            else:
                # Each ticker has its own stop signal: a review session opens a new one after
                # each question while the old one may still be winding down.
                self._stop = threading.Event()
                self._ticker = threading.Thread(
                    target=self._tick, args=(self._stop,), name="drpo-progress", daemon=True
                )
                self._ticker.start()

    def pause(self) -> None:
        """Stop the bar or ticker without waiting for the ticker thread (safe under the lock)."""
        with self._lock:
            bar, self._bar = self._bar, None
            self._stop.set()
            ticker, self._ticker = self._ticker, None
        if bar is not None:
            bar.stop()
        if ticker is not None:
            self._retired.append(ticker)

    def close(self) -> None:
        """Stop the status ticker and wait for the stopped ones to end."""
        self.pause()
        for ticker in self._retired:
            ticker.join(timeout=2.0)
        self._retired.clear()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            with self._lock:
                if not stop.is_set() and time.monotonic() - self.last_line >= STATUS_EVERY:
                    self._say(f"  … {self.status()}")

    # ---- events -----------------------------------------------------------------------------

    def __call__(self, event: RunEvent) -> None:
        """Print what the event says about the run (called for every run event)."""
        with self._lock:
            if not isinstance(event, ReviewNeeded | RunFinished):
                self.open()  # a decision resumes a run without a RunStarted event
            self._handle(event)
            self._refresh()

    def _handle(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.started = time.monotonic()
            if self.summary:
                self._say(self.summary)
            self._say(f"run [bold]{self.run_id}[/] (store: {event.store})")
        elif isinstance(event, RunWarning):
            self._say(f"[yellow]warning:[/] {event.message}")
        elif isinstance(event, ServerStarted):
            pinning = ", calls pinned to slots by prompt prefix" if event.pinned else ""
            self._say(
                f"embedded server: {event.model}, {event.threads} thread"
                f"{'s' if event.threads != 1 else ''} ({event.reason}), "
                f"{event.slots} slots{pinning}"
            )
        elif isinstance(event, SettingsAdapted):
            self._say(adaptation_text(event))
            self._adapted()
        elif isinstance(event, SpeedMeasured):
            speed = ServerSpeed(event.prefill_per_second, event.decode_per_second)
            if self.clock is not None:
                self.clock.measured(speed)
                self._say(time_forecast(self.clock.estimate, speed, self.preset))
        elif isinstance(event, CallStarted):
            if self.clock is not None:
                self.clock.call_started(time.monotonic(), event.role)
        elif isinstance(event, CallFinished):
            self._on_call(event)
        elif isinstance(event, ProposalRejected):
            if self.clock is not None:
                self.clock.proposal_rejected(event.level, event.parent_id)
        elif isinstance(event, StepFinished):
            self._on_node(event.node)
        elif isinstance(event, LevelDone):
            if self.clock is not None:
                rewards = {entry.candidate_id: entry.reward for entry in event.beam}
                self.clock.level_finished(event.level, event.children, rewards)
            beam = ", ".join(f"{e.candidate_id} {e.value:.2f}" for e in event.beam)
            unscored = f" ({event.unscored} unscored)" if event.unscored else ""
            self._say(
                f"  level {event.level}/{event.depth_limit}: {event.children} candidates"
                f"{unscored} · beam [{beam}] · {self.cost(event.level)}"
            )
        elif isinstance(event, ReviewNeeded | RunFinished):
            self.pause()

    def _adapted(self) -> None:
        """Count against the adapted run's estimate, as the store now holds its settings."""
        try:
            store = RunStore(self.store_path)
            try:
                row = store.run(self.run_id)
            finally:
                store.close()
            if row is None:
                return
            settings = settings_from_stored(json.loads(row["settings"]))
            estimate = estimate_run(settings, load_run_data(settings), stored_rubric(row))
        except (StoreError, ConfigError, DataFileError, ValueError, OSError):
            return  # the old estimate stays: an ETA counted against more calls than will run
        self.clock = RunClock(estimate)
        self._say(describe(estimate).splitlines()[0])

    def _on_call(self, call: CallFinished) -> None:
        if call.outcome in ("ok", "cache_hit"):
            self.calls += 1
        self.tokens += call.prompt_tokens + call.completion_tokens
        if self.clock is not None:
            self.clock.call_finished(call, time.monotonic())

    def _on_node(self, node: str) -> None:
        if self.clock is not None and node == "optimize_example":
            self.clock.example_finished()
        elif self.clock is not None and node == "collect_examples":
            self.clock.stage_a_finished()
        # A phase can take minutes on a local model, so its start is announced, not only its end.
        if node == "prepare":
            self._say("data loaded and indexed; the search begins")
        elif node == "optimize_example":
            self.examples_done += 1
            self._say(f"  stage A: example {self.examples_done} optimized · {self.cost()}")
        elif node == "collect_examples":
            self._say("stage A done; stage B: searching system prompts")
        elif node == "start_level":
            self._say("  next level: choosing rewards, rewriting prompts, scoring answers…")
        elif node == "start_validation":
            self._say("validating the best prompts on held-out queries")

    # ---- text -------------------------------------------------------------------------------

    def eta(self) -> str:
        """The remaining time as text, or empty before the clock can tell."""
        if self.clock is None:
            return ""
        eta = self.clock.eta(time.monotonic())
        return "ETA: no time estimate yet" if eta is None else eta_text(eta)

    def status(self) -> str:
        """`12/53 calls · 9,830 tokens · 4 min 10 s elapsed · ETA about 21 min`."""
        elapsed = int(time.monotonic() - self.started)
        expected = f"/{self.clock.calls_expected}" if self.clock is not None else ""
        done = self.clock.calls_done if self.clock is not None else self.calls
        parts = [
            f"{done}{expected} calls",
            f"{self.tokens:,} tokens",
            f"{elapsed // 60} min {elapsed % 60:02d} s elapsed",
        ]
        if eta := self.eta():
            parts.append(eta)
        return " · ".join(parts)

    def _refresh(self) -> None:
        if self._bar is None or self._task is None:
            return
        total = self.clock.calls_expected if self.clock is not None else None
        done = self.clock.calls_done if self.clock is not None else self.calls
        status = f"{done}{f'/{total}' if total else ''} calls · {self.tokens:,} tokens"
        if eta := self.eta():
            status += f" · {eta}"
        self._bar.update(self._task, completed=done, total=total, status=status)

    def cost(self, level: int | None = None) -> str:
        """The run's cost so far, preceded by the level's own when `level` is given."""
        try:
            store = RunStore(self.store_path)
            try:
                cost = store.run_cost(self.run_id)
                here = f"{level_line(store, self.run_id, level)} · " if level is not None else ""
            finally:
                store.close()
        except StoreError:
            return ""
        return (
            f"{here}total {cost.calls} calls ({cost.cache_hits} cached), "
            f"{cost.prompt_tokens}+{cost.completion_tokens} tokens"
        )

    def _say(self, line: str) -> None:
        self.last_line = time.monotonic()
        # soft_wrap: a log file or pipe gets whole lines, not lines cut at 80 columns.
        console.print(line, highlight=False, soft_wrap=True)
