"""The typed events a run reports while it executes, for `optimize(on_event=...)` and streams.

Every event is a frozen pydantic model with a literal `kind`, so a caller can `match` on the class
or dispatch on `event.kind`, and `RunEvent` validates one from its JSON (`model_dump()`). They
carry no secret: endpoints are named by URL, never with their key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from drpo.state.types import ReviewRequest, RunResult


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunStarted(_Event):
    """The run exists in the store and its models are about to start."""

    kind: Literal["run_started"] = "run_started"
    run_id: str
    store: str
    resumed: bool = False


class RunWarning(_Event):
    """Something the user should know that does not stop the run (e.g. no time estimate)."""

    kind: Literal["warning"] = "warning"
    message: str


class ServerStarted(_Event):
    """An embedded llama.cpp server serves `model` with these threads and slots, for `reason`."""

    kind: Literal["server_started"] = "server_started"
    model: str
    threads: int
    slots: int
    pinned: bool
    reason: str


class SpeedMeasured(_Event):
    """The embedded server serving `model` was timed at start (one request, prompt cache off)."""

    kind: Literal["speed_measured"] = "speed_measured"
    model: str
    prefill_per_second: float
    decode_per_second: float


class SettingChange(_Event):
    """One search setting lowered to fit the time target: `setting` is its dotted name."""

    setting: str
    before: int | None  # None: no limit (examples.limit unset)
    after: int


class SettingsAdapted(_Event):
    """The default search was cut to fit the time target at the speed measured at start.

    `expected_seconds` is the run's expected time at the default settings, `adapted_seconds` at
    the adapted ones (points, not bounds: `RunClock.expected_before_start`); `fits` is False when
    even the smallest search of the ladder is expected over `aim_seconds` (it runs anyway).
    It comes before the `SpeedMeasured` of the probe it used; the run store keeps the adapted
    settings and this event (`runs.adapted`).
    """

    kind: Literal["settings_adapted"] = "settings_adapted"
    target_seconds: float
    # The expected time the search was cut to, a margin below the target (runs have taken longer
    # than expected); None in runs stored before there was a margin (they aimed at the target).
    aim_seconds: float | None = None
    expected_seconds: float
    adapted_seconds: float
    fits: bool
    prefill_per_second: float
    decode_per_second: float
    changes: tuple[SettingChange, ...]


class StepFinished(_Event):
    """A graph node finished (prepare, optimize_example, start_level, start_validation, …)."""

    kind: Literal["step_finished"] = "step_finished"
    node: str


class CallStarted(_Event):
    """A model request was sent (each attempt, each replica tried); a `CallFinished` follows.

    With the finished calls it tells how many are in flight, which the ETA's concurrency needs.
    """

    kind: Literal["call_started"] = "call_started"
    role: str
    endpoint: str


class CallFinished(_Event):
    """One model request ended: its role, endpoint, outcome and what it cost.

    `cached_tokens` are the prompt tokens the server took from its prefix cache; a `cache_hit`
    was answered from drpo's reply cache and cost nothing. `seconds` is the request's latency.
    """

    kind: Literal["call_finished"] = "call_finished"
    role: str
    model: str
    endpoint: str
    outcome: Literal["ok", "cache_hit", "invalid", "error"]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0
    stage: str = ""
    level: int | None = None


class ProposalRejected(_Event):
    """The proposal rules dropped a rewrite before scoring: it will never be answered or judged.

    `parent_id` is the beam prompt it rewrote; the ETA takes its answers and judgements off the
    calls left at once.
    """

    kind: Literal["proposal_rejected"] = "proposal_rejected"
    candidate_id: str
    parent_id: str
    level: int
    reason: str


class BeamEntry(_Event):
    """One prompt in the beam after a level, with its path value and level reward."""

    candidate_id: str
    value: float
    reward: float | None = None


class LevelDone(_Event):
    """A search level was scored; `beam` is what survives into the next level, best first."""

    kind: Literal["level_done"] = "level_done"
    level: int
    depth_limit: int
    children: int
    unscored: int
    beam: tuple[BeamEntry, ...]


class ReviewNeeded(_Event):
    """The run waits for a person's decision (`drpo review`, or `decide_async`)."""

    kind: Literal["review_needed"] = "review_needed"
    run_id: str
    request: ReviewRequest | None = None


class RunFinished(_Event):
    """The run completed; `result` is what `optimize` returns."""

    kind: Literal["run_finished"] = "run_finished"
    result: RunResult


RunEvent = Annotated[
    RunStarted
    | RunWarning
    | ServerStarted
    | SpeedMeasured
    | SettingsAdapted
    | StepFinished
    | CallStarted
    | CallFinished
    | ProposalRejected
    | LevelDone
    | ReviewNeeded
    | RunFinished,
    Field(discriminator="kind"),
]
RUN_EVENT: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
