"""The run's remaining time, from its own measured speed applied to the calls it has left.

For each role and endpoint the finished calls give seconds per prompt token the server processed
(prefix-cache hits excluded) and per completion token: a least-squares fit of each call's latency,
or, while the calls are too alike to separate the two, their total split in the ratio the start
probe measured. The calls left per role are the estimate's count minus those done; each is
assumed as long as the role's calls so far (the estimate's upper bounds until one has finished).
Calls run side by side, so the summed latency is turned into wall time by the concurrency the run
has shown so far (summed latency / elapsed). Before any call finishes, the probe's single-stream
speed alone gives a first figure; without a probe there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

from drpo.backends.speed_probe import ServerSpeed
from drpo.nodes.estimate import Estimate
from drpo.state.events import CallFinished

# Decode costs about this many prefill tokens per token on CPUs (5–8 on the machines measured);
# used only to split a total when neither the probe nor the calls separate the two.
DEFAULT_DECODE_COST = 6.0
# Below this, the calls' token mixes are too alike for a two-rate fit.
MIN_CONDITION = 0.05


@dataclass
class _Fit:
    """Sums of one (role, endpoint)'s paid calls: enough for a two-rate least-squares fit."""

    calls: int = 0
    prompt: float = 0.0
    completion: float = 0.0
    seconds: float = 0.0
    pp: float = 0.0
    pc: float = 0.0
    cc: float = 0.0
    ps: float = 0.0
    cs: float = 0.0

    def add(self, prompt: float, completion: float, seconds: float) -> None:
        self.calls += 1
        self.prompt += prompt
        self.completion += completion
        self.seconds += seconds
        self.pp += prompt * prompt
        self.pc += prompt * completion
        self.cc += completion * completion
        self.ps += prompt * seconds
        self.cs += completion * seconds

    def rates(self, decode_cost: float) -> tuple[float, float]:
        """(seconds per prompt token, seconds per completion token)."""
        det = self.pp * self.cc - self.pc * self.pc
        if det > MIN_CONDITION * self.pp * self.cc:
            per_prompt = (self.ps * self.cc - self.cs * self.pc) / det
            per_completion = (self.cs * self.pp - self.ps * self.pc) / det
            if per_prompt > 0 and per_completion > 0:
                return per_prompt, per_completion
        weighted = self.prompt + decode_cost * self.completion
        per_prompt = self.seconds / weighted if weighted else 0.0
        return per_prompt, decode_cost * per_prompt


class RunClock:
    """Counts a run's calls against its estimate and predicts when it ends."""

    def __init__(self, estimate: Estimate) -> None:
        self.estimate = estimate
        self.speed: ServerSpeed | None = None
        self.fits: dict[tuple[str, str], _Fit] = {}
        self.done: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency = 0.0
        self.first_call: float | None = None

    @staticmethod
    def before_start(estimate: Estimate, speed: ServerSpeed) -> float:
        """The whole run's seconds at the probe's single-stream speed (token upper bounds)."""
        clock = RunClock(estimate)
        clock.measured(speed)
        seconds = clock.remaining(0.0)
        assert seconds is not None  # a probe speed always gives a figure
        return seconds

    @property
    def calls_done(self) -> int:
        """Calls finished so far (paid or served from the cache)."""
        return sum(self.done.values())

    @property
    def calls_expected(self) -> int:
        """Calls the run will make: the estimate, or more once the run made more."""
        return max(self.estimate.calls, self.calls_done)

    def measured(self, speed: ServerSpeed) -> None:
        """Use the probed server speed for the calls still to come."""
        self.speed = speed

    def call_finished(self, call: CallFinished, now: float) -> None:
        """Count a finished call toward its role (failed and re-asked ones are not counted)."""
        if call.outcome not in ("ok", "cache_hit"):
            return  # re-asked or failed: the estimate does not count it, the retry is counted
        self.done[call.role] = self.done.get(call.role, 0) + 1
        if call.outcome == "cache_hit":
            return
        if self.first_call is None:
            self.first_call = now - call.seconds
        self.prompt_tokens += call.prompt_tokens
        self.completion_tokens += call.completion_tokens
        self.latency += call.seconds
        processed = call.prompt_tokens - call.cached_tokens
        fit = self.fits.setdefault((call.role, call.endpoint), _Fit())
        fit.add(processed, call.completion_tokens, call.seconds)

    def remaining(self, now: float) -> float | None:
        """Seconds until the run ends, or None when nothing measured this machine's speed yet."""
        work = 0.0
        for role, planned in self.estimate.roles.items():
            left = max(0, planned.calls - self.done.get(role, 0))
            if not left:
                continue
            seconds = self._seconds_per_call(
                role, planned.prompt_tokens, planned.completion_tokens, planned.calls
            )
            if seconds is None:
                return None
            work += left * seconds
        if self.first_call is None or self.latency <= 0:
            return work  # the probe's single stream: no concurrency measured yet
        concurrency = max(1.0, self.latency / max(now - self.first_call, 1e-9))
        return work / concurrency

    def _decode_cost(self) -> float:
        if self.speed is None:
            return DEFAULT_DECODE_COST
        return self.speed.prefill_per_second / self.speed.decode_per_second

    def _seconds_per_call(
        self, role: str, prompt_bound: int, completion_bound: int, planned: int
    ) -> float | None:
        own = [fit for (r, _), fit in self.fits.items() if r == role and fit.calls]
        if own:
            fit = _merged(own)
            per_prompt, per_completion = fit.rates(self._decode_cost())
            return (per_prompt * fit.prompt + per_completion * fit.completion) / fit.calls
        # No call of this role yet: its estimated tokens at the speed seen so far.
        prompt, completion = prompt_bound / planned, completion_bound / planned
        if self.fits:
            per_prompt, per_completion = _merged(list(self.fits.values())).rates(
                self._decode_cost()
            )
            return per_prompt * prompt + per_completion * completion
        if self.speed is not None:
            return self.speed.seconds(prompt, completion)
        return None


def _merged(fits: list[_Fit]) -> _Fit:
    total = _Fit()
    for fit in fits:
        for name in vars(total):
            setattr(total, name, getattr(total, name) + getattr(fit, name))
    return total


def minutes(seconds: float) -> str:
    """`about 40 s`, `about 12 min`, `about 1 h 40 min`."""
    if seconds < 59.5:
        return f"about {max(1, round(seconds))} s"
    whole = round(seconds / 60)
    if whole < 60:
        return f"about {whole} min"
    return f"about {whole // 60} h {whole % 60:02d} min"
