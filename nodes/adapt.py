"""Fit the default search to this machine: cut it, rung by rung, until it is expected in time.

The same default run takes 11 min on one 2-vCPU machine and over 50 on another (issue #16), so
when the user ran the default search on the embedded server and the start probe's speed gives an
expected time above `AIM_SHARE` of `time_target_minutes` (a margin: runs have taken up to a
quarter longer than expected), the search is cut along `LADDER` until the expected time is
within that aim: each rung lowers one more setting, the run is re-estimated with `estimate_run` and
timed with `RunClock.expected_before_start` (a point at the stored runs' reply fill, prefix-cache
hits and rejected proposals; the upper bound, about twice as long, would cut runs that fit). The
first rung that fits is taken; when none does, the last (the smallest search) runs, and says so.

The ladder keeps what the method needs: both stages (stage A on at least one example, one
round), a beam search of at least one level with two proposals per prompt, and a validation
round that compares the best prompt with the starting one. Its order puts first what costs the
result least for the time it saves, measured at 18 tok/s prefill and 5.2 tok/s decode (the
EPYC of issue #16), default run about 43 min expected (commit 979ba70):

| rung | expected after it | what the run loses |
|---|---|---|
| search.finalists 2→1 | 38 min | the runner-up prompt's validation |
| examples.limit 4→2 | 32 min | stage A on two of the four examples |
| search.depth 2→1 | 22 min | the second level of rewrites |
| search.validation_size 2→1 | 19 min | one of two validation queries |
| examples.limit 2→1 | 16 min | stage A on one more example |

`base.max_tokens` is not on it: the default run's answers already fill two thirds of its 256
tokens, so a lower limit would cut answers off and change what the judge scores.

Only a search nobody chose is cut: not after `--preset` (or a preset in the config or the
environment), nor when any `search.*`, `examples.*` or `base.max_tokens` was given, nor for
settings built without `load_settings` (nothing records what their user chose), nor when a role
uses a remote endpoint, whose time the probe does not measure.
"""

from __future__ import annotations

from dataclasses import dataclass

from drpo.backends.speed_probe import ServerSpeed
from drpo.nodes.context import RunData
from drpo.nodes.estimate import Estimate, estimate_run
from drpo.nodes.eta import RunClock
from drpo.prompts.rubric import BUILTIN_RUBRIC, Rubric
from drpo.state.events import SettingChange, SettingsAdapted
from drpo.state.settings import ROLES, Settings, deep_merge, settings_from_stored


@dataclass(frozen=True)
class Rung:
    """One step down the ladder: `setting` (dotted) lowered to `value`."""

    setting: str
    value: int


LADDER: tuple[Rung, ...] = (
    Rung("search.finalists", 1),
    Rung("examples.limit", 2),
    Rung("search.depth", 1),
    Rung("search.validation_size", 1),
    Rung("examples.limit", 1),
)
# The share of the target the expected time is cut to. The expected time is a point at the stored
# runs' pruning and reply lengths, and runs have taken up to 1.27x it (README "First-run time":
# the 2-vCPU EPYC 19 -> 24.2 min, the slowed Xeon 19 -> 21.4, a fresh clone 12 -> 14.6), so a
# search cut to the target itself ends after it about as often as not.
AIM_SHARE = 0.8
# What the user must have left alone for the search to be cut (dotted-name prefixes).
USER_SEARCH = ("search", "examples", "base.max_tokens", "preset")


@dataclass(frozen=True)
class Adaptation:
    """The settings a run goes with, and why: the expected seconds before and after."""

    settings: Settings
    changes: tuple[SettingChange, ...]
    expected_seconds: float
    adapted_seconds: float
    target_seconds: float
    speed: ServerSpeed
    estimate: Estimate

    @property
    def aim_seconds(self) -> float:
        """The expected time the search is cut to: a margin below the target."""
        return self.target_seconds * AIM_SHARE

    @property
    def fits(self) -> bool:
        """Whether the run goes expected within the aim."""
        return self.adapted_seconds <= self.aim_seconds

    def event(self) -> SettingsAdapted:
        """The event telling callers what was cut."""
        return SettingsAdapted(
            target_seconds=self.target_seconds,
            aim_seconds=self.aim_seconds,
            expected_seconds=self.expected_seconds,
            adapted_seconds=self.adapted_seconds,
            fits=self.fits,
            prefill_per_second=self.speed.prefill_per_second,
            decode_per_second=self.speed.decode_per_second,
            changes=self.changes,
        )


def why_not_adapted(settings: Settings) -> str | None:
    """Why these settings are run as they are, whatever the speed; None when they may be cut."""
    if settings.time_target_minutes <= 0:
        return "time_target_minutes is 0"
    if settings.chosen is None:
        return "the settings were not loaded with load_settings, so nothing says what was chosen"
    chosen = sorted(
        name
        for name in settings.chosen
        if any(name == p or name.startswith(f"{p}.") for p in USER_SEARCH)
    )
    if chosen:
        return f"{chosen[0]} was chosen"
    if not all(settings.role(role).is_embedded for role in ROLES):
        return "a role uses a remote endpoint"
    return None


def slowest(speeds: list[ServerSpeed]) -> ServerSpeed:
    """The lowest prefill and decode speed of several embedded servers (one per model)."""
    return ServerSpeed(
        min(s.prefill_per_second for s in speeds), min(s.decode_per_second for s in speeds)
    )


def fit_to_speed(
    settings: Settings, data: RunData, speed: ServerSpeed, rubric: Rubric = BUILTIN_RUBRIC
) -> Adaptation:
    """The settings cut along the ladder as far as the target needs (`changes` empty: none).

    Call it only for settings `why_not_adapted` lets through.
    """
    target = settings.time_target_minutes * 60
    aim = target * AIM_SHARE
    estimate = estimate_run(settings, data, rubric)
    expected = RunClock.expected_before_start(estimate, speed)
    chosen, chosen_estimate, seconds = settings, estimate, expected
    lowered: dict[str, int] = {}  # setting → its new value, in the order first lowered
    for rung in LADDER:
        if seconds <= aim:
            break
        before = _value(chosen, rung.setting)
        if before is not None and before <= rung.value:
            continue  # already as small: the rung cuts nothing
        chosen = _lowered(chosen, rung)
        chosen_estimate = estimate_run(chosen, data, rubric)
        seconds = RunClock.expected_before_start(chosen_estimate, speed)
        lowered[rung.setting] = rung.value
    changes = tuple(
        SettingChange(setting=name, before=_value(settings, name), after=value)
        for name, value in lowered.items()
    )
    return Adaptation(
        settings=chosen,
        changes=changes,
        expected_seconds=expected,
        adapted_seconds=seconds,
        target_seconds=target,
        speed=speed,
        estimate=chosen_estimate,
    )


def _value(settings: Settings, dotted: str) -> int | None:
    section, name = dotted.split(".")
    value: int | None = getattr(getattr(settings, section), name)
    return value


def _lowered(settings: Settings, rung: Rung) -> Settings:
    section, name = rung.setting.split(".")
    lowered = settings_from_stored(
        deep_merge(settings.public_dict(), {section: {name: rung.value}})
    )
    return lowered.with_chosen(settings.chosen)
