"""The search policy: every rule about what the search does, computed once from the settings.

Pure functions of the settings, the data sizes and the graph state, with no model call and no
I/O, so the graph's routing, the pre-run estimate and the run API read the same answers and
cannot disagree: how many levels and queries a run has (`Schedule`), which prompts count as
the same, which a person took out of the race, what the starting prompt validated at, and
when a person must review. The nodes that act on these rules import them from here.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass

from drpo.state.graph_state import SearchState
from drpo.state.settings import Settings
from drpo.state.types import Candidate, LevelScore, Proposal, Query, ReviewDecision


@dataclass(frozen=True)
class Schedule:
    """How large each part of a run is, before it starts."""

    levels: int  # levels the search runs without the skip rule: the root plus `depth`
    max_levels: int  # levels it may run when the skip rule extends the depth to its limit
    queries_per_level: int  # training queries each level scores its prompts on
    stage_a_size: int  # examples stage A optimizes (0: skipped)
    validation_size: int  # validation queries of the final pick (0: no validation round)
    finalists: int  # best prompts seen that the validation round re-scores

    @property
    def extension(self) -> int:
        """The most levels the skip rule can add."""
        return self.max_levels - self.levels


# A skip threshold of 5 turns the rule off (for judges that rate nearly everything 5).
SKIP_RULE_OFF = 5.0


def skip_rule_on(settings: Settings) -> bool:
    """Whether the paper's skip rule is on."""
    return settings.search.skip_threshold < SKIP_RULE_OFF


def schedule(settings: Settings, examples: int, validation: int) -> Schedule:
    """The run's schedule for `examples` seed examples and `validation` validation queries.

    The depth is extended only when a level carries a skipped prompt, which only the skip rule
    does: with the rule off the search never runs past `depth`.
    """
    search, stage = settings.search, settings.examples
    levels = search.depth + 1
    extension = search.max_extension if skip_rule_on(settings) else 0
    if not stage.enabled or stage.rounds == 0 or examples == 0:
        stage_a = 0
    else:
        stage_a = examples if stage.limit is None else min(stage.limit, examples)
    return Schedule(
        levels=levels,
        max_levels=levels + extension,
        queries_per_level=search.batch_size,
        stage_a_size=stage_a,
        validation_size=min(search.validation_size, validation),
        finalists=max(search.finalists, 1),
    )


def level_batch(order: list[str], queries: list[Query], level: int, size: int) -> list[Query]:
    """The level's queries: the next `size` of the seeded order, wrapping around."""
    by_id = {q.id: q for q in queries}
    if not order:
        return []
    picked = [order[(level * size + j) % len(order)] for j in range(min(size, len(order)))]
    missing = [qid for qid in picked if qid not in by_id]
    if missing:
        raise ValueError(f"training query {missing[0]!r} of this run is no longer in the data")
    return [by_id[qid] for qid in picked]


def normalise_prompt(prompt: str) -> str:
    """A prompt with case and whitespace folded, to compare prompts for duplicates."""
    return " ".join(prompt.split()).lower()


def same_prompt(a: str, b: str) -> bool:
    """Whether two prompts are the same once case and whitespace are folded."""
    return normalise_prompt(a) == normalise_prompt(b)


def unique_proposals(proposals: list[Proposal], dedupe: bool) -> list[Proposal]:
    """Drop proposals whose prompt repeats an earlier one at this level (identical beams)."""
    if not dedupe:
        return list(proposals)
    seen: set[str] = set()
    kept: list[Proposal] = []
    for proposal in proposals:
        key = normalise_prompt(proposal.candidate.prompt)
        if key not in seen:
            seen.add(key)
            kept.append(proposal)
    return kept


def child_ancestry(parent: Candidate, history: int) -> tuple[str, ...]:
    """The prompt versions a child of `parent` shows the optimizer: the last `history`."""
    return (*parent.ancestry, parent.prompt)[-history:] if history else ()


def rejected_ids(reviewed: dict[str, ReviewDecision]) -> set[str]:
    """The candidates a person rejected or replaced by an edit: out of the race."""
    return {cid for cid, d in reviewed.items() if d.decision in ("reject", "edit")}


def is_starting_prompt(candidate: Candidate, settings: Settings) -> bool:
    """Whether `candidate` is the run's starting prompt (case and whitespace aside)."""
    return same_prompt(candidate.prompt, settings.search.initial_prompt)


def level_rewards(scores: list[LevelScore]) -> dict[str, float]:
    """Mean reward per candidate over its scored queries; unscored candidates are absent."""
    by_candidate: dict[str, list[float]] = defaultdict(list)
    for score in scores:
        if score.reward is not None:
            by_candidate[score.candidate_id].append(score.reward)
    return {cid: sum(values) / len(values) for cid, values in by_candidate.items()}


def validated(state: SearchState, settings: Settings) -> list[tuple[Candidate, float]]:
    """The validation round's candidates with their mean reward, best first.

    The starting prompt competes like any finalist and wins ties: a rewrite that validates only
    as well as the prompt it started from is no evidence of an improvement.
    """
    values = level_rewards(state.get("scores", []))
    excluded = rejected_ids(state.get("reviewed", {}))
    pairs = [
        (p.candidate, values[p.candidate.id])
        for p in state.get("proposals", [])
        if p.candidate.id in values and p.candidate.id not in excluded
    ]
    return sorted(
        pairs,
        key=lambda pair: (
            -pair[1],
            not is_starting_prompt(pair[0], settings),
            -pair[0].value,
        ),
    )


def baseline_value(
    ranking: list[tuple[Candidate, float]], settings: Settings, besides: str | None = None
) -> float | None:
    """The starting prompt's validation value in `ranking` (not counting candidate `besides`)."""
    return next(
        (v for c, v in ranking if is_starting_prompt(c, settings) and c.id != besides), None
    )


def final_candidate(state: SearchState, settings: Settings) -> Candidate | None:
    """The prompt finalize would choose now, leaving out what a person rejected."""
    reviewed = state.get("reviewed", {})
    for cid, decision in reviewed.items():
        if decision.decision == "approve":
            return next(
                (p.candidate for p in state.get("proposals", []) if p.candidate.id == cid), None
            )
    excluded = rejected_ids(reviewed)
    if settings.search.final == "last_on_best_path" or state["phase"] != "validate":
        pool = [c for c in state["beam"] if c.id not in excluded]
        return pool[0] if pool else None
    ranked = [c for c, _ in validated(state, settings)]
    if ranked:
        return ranked[0]
    leaders = [c for c in state["leaders"] if c.id not in excluded]
    return leaders[0] if leaders else None


def changed_fraction(before: str, after: str) -> float:
    """How much of `before` an edit changed (0 unchanged, 1 all)."""
    return 1.0 - difflib.SequenceMatcher(None, before, after).ratio()


def needs_review(state: SearchState, settings: Settings) -> list[Candidate]:
    """The candidates a person must decide on before the search may go on."""
    policy = settings.review.policy
    reviewed = state.get("reviewed", {})
    if policy == "none" or state["stop_requested"]:
        return []
    if state["phase"] == "validate":
        # Under 'every' and 'threshold' each edit was already reviewed as it survived a level.
        if policy != "final" or any(d.decision == "approve" for d in reviewed.values()):
            return []
        final = final_candidate(state, settings)
        return [] if final is None or final.id in reviewed else [final]
    if policy not in ("every", "threshold") or state["level"] <= 0:
        return []
    parents = {p.id: p for p in state.get("parents", [])}
    return [
        c
        for c in state["beam"]
        if not c.carried
        and c.id not in reviewed
        and c.parent_id in parents
        and (policy == "every" or _worth_review(c, parents[c.parent_id], settings))
    ]


def _worth_review(candidate: Candidate, parent: Candidate, settings: Settings) -> bool:
    """Under the 'threshold' policy: the edit changed enough, or lowered the reward."""
    lowered = (
        len(candidate.path_rewards) >= 2
        and bool(parent.path_rewards)
        and candidate.path_rewards[-1] < parent.path_rewards[-1]
    )
    changed = changed_fraction(parent.prompt, candidate.prompt)
    return changed > settings.review.change_threshold or lowered


def next_after_level(state: SearchState) -> str:
    """The node after a reviewed level: the next level, or validation once the search ends."""
    if state["stop_requested"] or state["level"] >= state["depth_limit"]:
        return "start_validation"
    return "start_level"
