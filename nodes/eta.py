"""The run's remaining time, from its own measured speed applied to the calls it has left.

For each role and endpoint the finished calls give seconds per prompt token the server processed
(prefix-cache hits excluded) and per completion token: a least-squares fit of each call's latency,
or, while the calls are too alike to separate the two, their total split in the ratio the start
probe measured. A role with no finished call yet is timed at the rates of all calls so far.

The calls left per role are the calls the run is now expected to make, less those done. The
estimate counts the most a run can make; the clock re-counts them from what the run did
(`SearchShape.calls`): a rejected proposal (`ProposalRejected`) takes its answers and judgements
off at once, and with them the rewrites and children of the beam it no longer fills; a finished
level gives its children, a finished stage A example that made none of its rounds takes them off,
and stage A's end its actual calls. What the run has not shown yet is counted at the share the
stored runs had: proposals unscored (`PRIOR_REJECTED_SHARE`, until a search level shows the run's
own), stage A examples stopping after their first judgement (`PRIOR_EARLY_STOP`, for the examples
still running) and the starting prompt among the finalists (`PRIOR_BASELINE_KEPT`, until the beams
have ranked more prompts than the finalists). Until a search level is scored `eta` also gives a
range: from every proposal scored, no example stopping early and the starting prompt re-scored as
an extra finalist, to the higher unscored share seen (`HIGH_REJECTED_SHARE`) with every example
stopping at its next judgement and the starting prompt among the finalists (README, "Progress,
time estimate and events").

The tokens of the calls left are the estimate's, with the model-written parts (replies, and the
replies quoted in later prompts) scaled from their upper bounds to the fill the run's replies have
shown: completion tokens over `max_tokens`, the role's own once it has a call, all roles' before
(the same model writes them all, under the same kind of length limit). Their prompt tokens are
then reduced by the share the role's calls so far took from the prefix cache; a role with no call
yet gets none, since its prefix is only cached once one of its calls has run.

Calls run side by side, so the summed seconds become wall time through the run's concurrency: the
mean number of calls in flight since the first one started, counting calls still running (from
`CallStarted` events) and the gaps when none runs (the graph's own work between calls). A call in
flight counts with what is left of its predicted latency; one running past it is taken as ending
now, and `Eta.overdue_call` says how long it has run, so the display says "over". Before any call
finishes, the probe's single-stream speed alone gives a first figure, at the token upper bounds;
without a probe there is none. A resumed run learns its rates from its stored calls (not their
wall time), and the calls its interrupted tasks re-read from the reply cache are not counted again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from drpo.backends.speed_probe import ServerSpeed
from drpo.nodes.estimate import Estimate
from drpo.state.events import CallFinished
from drpo.state.settings import RoleName

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


@dataclass
class _Usage:
    """Tokens of one role's paid calls, for its fill and prefix-cache share."""

    calls: int = 0
    prompt: int = 0
    processed: int = 0
    completion: int = 0


# The share of the optimizer's proposals that go unscored (rejected by the proposal rules, or a
# repeat of another's text), before the run has shown its own: counted in the three stored runs
# of the default preset on the embedded 1.5B (README, "Progress, time estimate and events"):
# 20261202-042303-d0f372 had 0 of 6 unscored, 20261202-065146-172879 2 of 4,
# 20261202-091654-dcf3f0 2 of 4; pooled 4 of 14. The range the ETA shows runs from every
# proposal scored to the higher share those runs had.
PRIOR_REJECTED_SHARE = 4 / 14
HIGH_REJECTED_SHARE = 0.5
# The other two ways those runs made fewer calls than the estimate's maximum, as unknown as the
# rejections until they happen, so the point counts them at the share the runs had: a stage A
# example stopping after its first judgement (0, 2 and 1 of their 4 examples: 3 of 12), and the
# starting prompt ranking among the finalists, so the validation round re-scores no extra
# prompt (it did in the second and third run, not in the first: 2 of 3). Until this version the
# point assumed neither, and was too late after 5 calls on all five runs replayed (+12 % to
# +51 %); these shares were fixed before the runs that test them (README).
PRIOR_EARLY_STOP = 3 / 12
PRIOR_BASELINE_KEPT = 2 / 3

# How many calls a figure counts: the most the run can still make (the range's high end), the
# calls expected at the priors above (the point), or the fewest it can (the range's low end).
Bound = Literal["most", "expected", "fewest"]

# What the same two runs' calls turned out to be, pooled per role, for the expected time before
# any call (`RunClock.expected_before_start`): completion tokens over `max_tokens` ...
PRIOR_FILL: dict[str, float] = {"base": 0.67, "selector": 0.29, "judge": 0.52, "optimizer": 0.29}
# ... and the share of the prompt tokens the server took from its prefix cache.
PRIOR_CACHED: dict[str, float] = {"base": 0.04, "selector": 0.53, "judge": 0.37, "optimizer": 0.06}


@dataclass(frozen=True)
class Eta:
    """The remaining time: a point figure, the range it lies in while the rejections are
    unknown, and the longest a call in flight has run beyond what the rates predicted."""

    seconds: float
    low: float | None = None
    high: float | None = None
    overdue_call: float | None = None  # how long that call has run, when one has


class RunClock:
    """Counts a run's calls against its estimate and predicts when it ends."""

    def __init__(self, estimate: Estimate, priors: bool = False) -> None:
        self.estimate = estimate
        # Whether a role without calls yet expects the stored runs' fill and prefix-cache share
        # (PRIOR_FILL, PRIOR_CACHED) instead of the upper bounds and no hit.
        self.priors = priors
        # Set only for the forecast's upper bound: no call finished yet, and still the bounds.
        self.bounds_until_measured = False
        self.speed: ServerSpeed | None = None
        self.fits: dict[tuple[str, str], _Fit] = {}
        self.usage: dict[str, _Usage] = {}
        self.done: dict[str, int] = {}
        self.latency = 0.0
        self.first_call: float | None = None
        # The time integral of the number of calls in flight, kept when starts are reported.
        self.in_flight: list[tuple[float, str]] = []  # (sent at, role) of each request
        self.busy = 0.0
        self.busy_since: float | None = None
        # What the run turned out to do, which the estimate's maximum could not know.
        self.examples_done: dict[str, float] = {}
        self.stage_a_calls: dict[str, float] | None = None
        self.examples_finished = 0
        self.children: dict[int, int] = {}
        self.rewards: dict[str, float] = {}  # each beam prompt's own reward, by candidate id
        self.rejected: dict[int, dict[str, int]] = {}
        # Proposals written per search level (one optimizer call each): what the rejected share
        # is out of, since a proposal can also go unscored as a repeat of another's text.
        self.proposals: dict[int, int] = {}
        # Calls a resumed run answers again from the reply cache, already counted as done.
        self.replays: dict[str, int] = {}
        self.stored_concurrency = 1.0

    @staticmethod
    def before_start(estimate: Estimate, speed: ServerSpeed) -> float:
        """The whole run's seconds at the probe's single-stream speed (token upper bounds,
        every proposal kept: an upper bound, as the forecast says)."""
        clock = RunClock(estimate)
        clock.bounds_until_measured = True
        clock.measured(speed)
        seconds = clock.remaining(0.0, share=0.0, bound="most")
        assert seconds is not None  # a probe speed always gives a figure
        return seconds

    @staticmethod
    def expected_before_start(estimate: Estimate, speed: ServerSpeed) -> float:
        """The whole run's seconds as the stored runs went, at the probe's single-stream speed:
        replies as full and prefix-cache hits as in those runs, their shares of proposals
        unscored, of stage A examples stopping early and of validation rounds with the starting
        prompt among the finalists. A point, not a bound."""
        clock = RunClock(estimate, priors=True)
        clock.measured(speed)
        seconds = clock.remaining(0.0)
        assert seconds is not None  # a probe speed always gives a figure
        return seconds

    @property
    def calls_done(self) -> int:
        """Calls finished (answered or from the reply cache), as the estimate counts them."""
        return sum(self.done.values())

    @property
    def calls_expected(self) -> int:
        """The calls the run is expected to make, or the calls done once it has made more."""
        return max(
            round(sum(self.planned(self.rejected_share(), "expected").values())), self.calls_done
        )

    def measured(self, speed: ServerSpeed) -> None:
        """Take the start probe's speed (the figure before any call, and the fit's fallback)."""
        self.speed = speed

    # ---- facts ------------------------------------------------------------------------------

    def call_started(self, now: float, role: str = "") -> None:
        """Count a request sent to a server (one per attempt), for the concurrency."""
        self._advance(now)
        self.in_flight.append((now, role))
        if self.first_call is None:
            self.first_call = now

    def call_finished(self, call: CallFinished, now: float) -> None:
        """Count a finished call and learn the server's speed from it."""
        if call.outcome in ("ok", "error") and self.busy_since is not None:
            self._advance(now)
            self._land(call.role, now - call.seconds)
        if call.outcome not in ("ok", "cache_hit"):
            return  # re-asked or failed: the estimate does not count it, the retry is counted
        if call.outcome == "cache_hit" and self.replays.get(call.role, 0) > 0:
            self.replays[call.role] -= 1  # a resumed run re-reading a call already counted
            return
        self._count(call)
        if call.outcome == "cache_hit":
            return  # answered in no time: not a measure of the server
        if self.first_call is None:
            self.first_call = now - call.seconds
        self.latency += call.seconds
        self.learn(call)

    def _count(self, call: CallFinished) -> None:
        self.done[call.role] = self.done.get(call.role, 0) + 1
        if call.stage == "examples":
            self.examples_done[call.role] = self.examples_done.get(call.role, 0) + 1
        if call.role == "optimizer" and call.stage == "search" and call.level is not None:
            self.proposals[call.level] = self.proposals.get(call.level, 0) + 1

    def learn(self, call: CallFinished) -> None:
        """Take a paid call's tokens and latency into the role's rates and reply fill."""
        processed = call.prompt_tokens - call.cached_tokens
        usage = self.usage.setdefault(call.role, _Usage())
        usage.calls += 1
        usage.prompt += call.prompt_tokens
        usage.processed += processed
        usage.completion += call.completion_tokens
        fit = self.fits.setdefault((call.role, call.endpoint), _Fit())
        fit.add(processed, call.completion_tokens, call.seconds)

    def resumed_from(self, calls: list[CallFinished], span: float = 0.0) -> None:
        """Take a stored run's calls: done, and their rates learnt; `span` (first start to last
        end) gives their concurrency until this session's own calls measure it.

        The interrupted tasks ask their finished calls again and get them from the reply cache;
        those hits are not counted twice.
        """
        latency = sum(call.seconds for call in calls if call.outcome == "ok")
        if span > 0 and latency > 0:
            self.stored_concurrency = latency / span
        for call in calls:
            if call.outcome not in ("ok", "cache_hit"):
                continue
            self._count(call)
            self.replays[call.role] = self.replays.get(call.role, 0) + 1
            if call.outcome == "ok":
                self.learn(call)

    def example_finished(self) -> None:
        """A stage A example is done (it stops early once an answer scores 5 everywhere)."""
        self.examples_finished += 1

    def rounds_skipped(self) -> float:
        """Stage A rounds the finished examples left out, at least: their planned rounds less
        every round whose optimizer calls are done (some may be unfinished examples')."""
        shape = self.estimate.shape
        per_round = shape.example_round.get("optimizer", 0.0) if shape is not None else 0.0
        if shape is None or not per_round:
            return 0.0
        rounds_done = self.examples_done.get("optimizer", 0) / per_round
        return max(0.0, self.examples_finished * shape.rounds - rounds_done)

    def rounds_skippable(self) -> float:
        """Stage A rounds the run can still leave out at most: every round not yet done (each
        example whose next judgement scores 5 everywhere stops there)."""
        shape = self.estimate.shape
        per_round = shape.example_round.get("optimizer", 0.0) if shape is not None else 0.0
        if shape is None or not per_round:
            return 0.0
        planned = shape.stage_a.get("optimizer", 0.0) / per_round
        rounds_done = self.examples_done.get("optimizer", 0) / per_round
        return max(self.rounds_skipped(), planned - rounds_done)

    def stage_a_finished(self) -> None:
        """Stage A ended: its calls are those made, however many more its maximum allowed."""
        self.stage_a_calls = dict(self.examples_done)

    def proposal_rejected(self, level: int, parent_id: str) -> None:
        """A proposal of `parent_id`'s rewrite at `level` was rejected and will not be scored."""
        per_parent = self.rejected.setdefault(level, {})
        per_parent[parent_id] = per_parent.get(parent_id, 0) + 1

    def level_finished(
        self, level: int, children: int, rewards: Mapping[str, float | None] | None = None
    ) -> None:
        """A search level was scored with this many children; `rewards`: its beam's own."""
        self.children[level] = children
        for candidate_id, reward in (rewards or {}).items():
            if reward is not None:
                self.rewards[candidate_id] = reward

    @property
    def finalists(self) -> int:
        """How many best prompts the validation round re-scores."""
        shape = self.estimate.shape
        return shape.finalists if shape is not None else 1

    def ranked(self) -> bool:
        """Whether more prompts than the finalists were ranked by their rewards: only then does
        the starting prompt's place among the best say anything (until then it is among them
        for want of rivals)."""
        return len(self.rewards) > self.finalists

    def baseline_kept(self) -> bool:
        """Whether the starting prompt is among the best finalists by the beams' rewards so far:
        then the validation round does not add it as one more. False until `ranked`."""
        if not self.ranked():
            return False
        best = sorted(self.rewards, key=lambda c: -self.rewards[c])[: self.finalists]
        return any(candidate.startswith("L0-") for candidate in best)

    # ---- the forecast -----------------------------------------------------------------------

    def rejected_share(self) -> float | None:
        """The share of proposals that went unscored at the levels finished so far (rejected
        by the rules, or a repeat of another proposal's text, which `unique_proposals` drops
        without a `ProposalRejected`); None before any.

        Out of the proposals written (the level's optimizer calls) where they were counted;
        a level's children include a beam prompt carried on unrewritten, so children alone
        are no measure of the proposals kept.
        """
        levels = [level for level in self.children if level > 0]
        if not levels:
            return None
        unscored = written = 0
        for level in levels:
            rejected = sum(self.rejected.get(level, {}).values())
            made = self.proposals.get(level, 0)
            if made:
                unscored += max(rejected, made - self.children[level])
                written += made
            else:  # no calls seen (a fact-only caller): the rejections and children it has
                unscored += rejected
                written += rejected + self.children[level]
        return unscored / written if written else None

    def planned(self, share: float | None, bound: Bound = "expected") -> dict[str, float]:
        """Calls per role the run makes in all, from what it did so far and `share` after.

        What has not happened yet is counted by `bound`: `most`, none of stage A's examples
        stopping early and the starting prompt re-scored as an extra finalist; `fewest`, every
        example stopping at its next judgement and the starting prompt among the finalists;
        `expected`, each at the stored runs' share (`PRIOR_EARLY_STOP`, `PRIOR_BASELINE_KEPT`).
        """
        shape = self.estimate.shape
        if shape is None:
            return {role: float(e.calls) for role, e in self.estimate.roles.items()}
        skipped = self.rounds_skipped()
        kept = float(self.baseline_kept())
        if bound == "fewest":
            skipped, kept = self.rounds_skippable(), 1.0
        elif bound == "expected":
            skipped += PRIOR_EARLY_STOP * (self.rounds_skippable() - skipped)
            if not self.ranked():
                kept = PRIOR_BASELINE_KEPT
        return shape.calls(
            self.stage_a_calls,
            self.children,
            self.rejected,
            PRIOR_REJECTED_SHARE if share is None else share,
            skipped,
            kept,
        )

    def eta(self, now: float) -> Eta | None:
        """The remaining time, or None when nothing measured this machine's speed yet."""
        point = self.remaining(now)
        if point is None:
            return None
        low = high = None
        if self.rejected_share() is None and self.estimate.shape is not None:
            # Stage A's early stops and the baseline's place among the finalists are as unknown
            # as the rejections here, and cost as many calls (issue #16's replays, README).
            low = self.remaining(now, HIGH_REJECTED_SHARE, "fewest")
            high = self.remaining(now, 0.0, "most")
        return Eta(seconds=point, low=low, high=high, overdue_call=self._overdue(now))

    def remaining(
        self, now: float, share: float | None = None, bound: Bound = "expected"
    ) -> float | None:
        """Seconds until the run ends, or None when nothing measured this machine's speed yet;
        `share`: the rejected share assumed from now on; `bound`: see `planned`.

        A call in flight counts with what is left of its predicted time; one past it as ending
        now, so the figure is then a lower bound (`Eta.overdue_call` says so).
        """
        planned = self.planned(self.rejected_share() if share is None else share, bound)
        work = 0.0
        for role, calls in planned.items():
            left = max(0.0, calls - self.done.get(role, 0))
            if left <= 0:
                continue
            seconds = self.seconds_per_call(role)  # type: ignore[arg-type]
            if seconds is None:
                return None
            work += left * seconds
        work = max(0.0, work - sum(done for _, done, _ in self.in_flight_work(now)))
        if self.first_call is None or self.latency <= 0:
            # The probe's single stream, or a resumed run's stored calls, until calls finish.
            return work / self.stored_concurrency
        return work / self.concurrency(now)

    def in_flight_work(self, now: float) -> list[tuple[float, float, float]]:
        """Per call in flight: (seconds it has run, the predicted work of it already done,
        its predicted latency)."""
        calls = []
        # Before any call finished the prediction is the probe's one stream, shared in flight.
        sharing = len(self.in_flight) if self.latency <= 0 else 1
        for sent, role in self.in_flight:
            predicted = self.seconds_per_call(role) if role in self.estimate.roles else None
            if predicted is None or predicted <= 0:
                continue
            expected = predicted * sharing
            ran = now - sent
            calls.append((ran, predicted * min(1.0, ran / expected), expected))
        return calls

    def _overdue(self, now: float) -> float | None:
        """How long the longest-running call past its predicted latency has run, if one has."""
        late = [ran for ran, _, expected in self.in_flight_work(now) if ran > expected]
        return max(late) if late else None

    def _land(self, role: str, sent: float) -> None:
        """Drop the request in flight that this finished call was: its role's, sent nearest."""
        mine = [i for i, (_, r) in enumerate(self.in_flight) if r == role]
        candidates = mine or list(range(len(self.in_flight)))
        if candidates:
            nearest = min(candidates, key=lambda i: abs(self.in_flight[i][0] - sent))
            del self.in_flight[nearest]

    def _advance(self, now: float) -> None:
        if self.busy_since is not None:
            self.busy += len(self.in_flight) * max(0.0, now - self.busy_since)
        self.busy_since = now

    def concurrency(self, now: float) -> float:
        """Calls in flight on average since the first began: the wall time a call's work takes.

        With starts reported it counts the gaps when none is in flight (the graph's own work
        between calls), which can make it below 1; from finished calls alone it cannot tell a
        gap from a call still running, so it is at least 1.
        """
        assert self.first_call is not None
        elapsed = max(now - self.first_call, 1e-9)
        if self.busy_since is None:  # no starts reported: finished calls only
            return max(1.0, self.latency / elapsed)
        busy = self.busy + len(self.in_flight) * max(0.0, now - self.busy_since)
        return max(busy / elapsed, 1e-3)

    def _decode_cost(self) -> float:
        if self.speed is None:
            return DEFAULT_DECODE_COST
        return self.speed.prefill_per_second / self.speed.decode_per_second

    def expected_tokens(self, role: RoleName) -> tuple[float, float]:
        """(prompt tokens to process, completion tokens) of one of the role's calls to come."""
        planned = self.estimate.roles[role]
        fill = self._fill(role)
        prompt = (
            planned.prompt_tokens - (1 - fill) * planned.written_prompt_tokens
        ) / planned.calls
        usage = self.usage.get(role)
        if usage is not None and usage.prompt:
            prompt *= usage.processed / usage.prompt
        elif self._prior_for(role):
            prompt *= 1 - PRIOR_CACHED[role]
        return prompt, fill * planned.completion_tokens / planned.calls

    def _prior_for(self, role: RoleName) -> bool:
        """Whether the role's fill and prefix-cache share come from the stored runs: with
        `priors` while the role has no call of its own, and in the live clock until the first
        call of any role finishes, so that the first ETA agrees with the "expected" forecast
        printed at the start rather than with its upper bound."""
        if role in self.usage:
            return False
        return self.priors or (not self.usage and not self.bounds_until_measured)

    def _fill(self, role: RoleName) -> float:
        """Completion tokens over their bound: the role's own calls', else the stored runs'
        (with `priors`), else all roles' or the bound itself."""
        if self._prior_for(role):
            # Roles fill their bounds very differently (base 67 %, selector 29 %): another
            # role's calls say less about this one than the stored runs do.
            return PRIOR_FILL[role]
        seen = [role] if role in self.usage else list(self.usage)
        bound = 0.0
        completion = 0
        for name in seen:
            planned = self.estimate.roles[name]  # type: ignore[index]
            if planned.calls and planned.completion_tokens:
                bound += self.usage[name].calls * planned.completion_tokens / planned.calls
                completion += self.usage[name].completion
        return min(1.0, completion / bound) if bound else 1.0

    def seconds_per_call(self, role: RoleName) -> float | None:
        """Predicted latency of one of the role's calls to come, or None without any speed."""
        prompt, completion = self.expected_tokens(role)
        return self.seconds_for(role, prompt, completion)

    def seconds_for(self, role: RoleName, prompt: float, completion: float) -> float | None:
        """Latency the role's rates give a call of these processed prompt and completion tokens."""
        own = [fit for (r, _), fit in self.fits.items() if r == role and fit.calls]
        fits = own or list(self.fits.values())
        if fits:
            per_prompt, per_completion = _merged(fits).rates(self._decode_cost())
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
