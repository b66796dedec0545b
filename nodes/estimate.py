"""The pre-run estimate: model calls per role from the schedule, and tokens from the prompts.

Calls are counted exactly as the graph will make them when every reply parses: stage A's
examples and rounds, each level's selections, rewrites, answers and judgements, and the
validation round. Where a run can end up shorter the count is the maximum: stage A stops when
an answer scores 5 on every aspect, identical proposals are scored once, the skip rule carries
good prompts without an optimizer call, and a call identical to an earlier one (in this run, or
a greedy call of another) is answered from the reply cache. Where a run can end up longer (the
skip rule's extra levels) the maximum includes them. Replies that do not parse are asked again,
which this does not foresee. Prompt tokens are rendered from the real templates and data at
about four characters per token, with every model-written text (answers, prompts, rationales)
at its `max_tokens`; completion tokens are `max_tokens` per reply. Both are upper bounds. The
model-written part of each role's prompt tokens is kept apart (`written_prompt_tokens`), so the
ETA can scale it, like the completion tokens, to how full the run's replies turn out to be.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from drpo.backends.providers import effective_profile, static_kind
from drpo.backends.structured_output import SCHEMA_IN_PROMPT
from drpo.nodes.context import RunData
from drpo.nodes.examples import ANSWER_WORDS
from drpo.nodes.policy import level_batch, schedule
from drpo.nodes.prepare import seeded_order
from drpo.prompts.base import format_base_prompt
from drpo.prompts.judge import JUDGE_ANSWER, RATIONALE_MAX_CHARS, format_aspects
from drpo.prompts.optimizer import (
    ANSWER_MAX_CHARS,
    PROMPT_MAX_CHARS,
    REWRITE_ANSWER,
    REWRITE_CASE,
    REWRITE_PROMPT,
    PromptProposal,
)
from drpo.prompts.rubric import BUILTIN_RUBRIC, Rubric
from drpo.prompts.selector import NEW_ASPECTS_ALLOWED, NEW_ASPECTS_FORBIDDEN, SELECT_ASPECTS
from drpo.state.settings import ROLES, RoleName, Settings
from drpo.state.types import Example, Query

CHARS_PER_TOKEN = 4
# Stands for model-written text in rendered prompts; a private-use code point, so no template or
# data file contains it and counting it measures exactly the model-written part.
WRITTEN = "\ue000"


def tokens(text: str) -> int:
    """A token count from the text's length (rounded up)."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass
class RoleEstimate:
    """One role's calls and token upper bounds; `written_prompt_tokens` ⊂ `prompt_tokens`."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    written_prompt_tokens: int = 0


Calls = dict[str, float]


def _plus(total: Calls, part: Calls, times: float = 1.0) -> None:
    for role, calls in part.items():
        total[role] = total.get(role, 0.0) + calls * times


@dataclass
class SearchShape:
    """The estimate's calls split by what decides them, so they can follow what the run does.

    Stage A's calls end early when an answer scores 5 on every aspect; a level's calls scale
    with its children (a rejected proposal is never answered or judged), the next level's
    rewrites with the beam those children leave, and the validation round with the prompts seen.
    """

    fixed: Calls = field(default_factory=dict)  # the search's and validation's aspect choices
    stage_a: Calls = field(default_factory=dict)
    # Per level: (calls of rewriting one beam prompt, calls of scoring one child).
    levels: list[tuple[Calls, Calls]] = field(default_factory=list)
    per_finalist: Calls = field(default_factory=dict)
    # One stage A example's round: its optimizer requests and their judgements.
    example_round: Calls = field(default_factory=dict)
    rounds: int = 0
    width: int = 1
    actions: int = 1
    finalists: int = 1

    def calls(
        self,
        stage_a: Calls | None = None,
        children: Mapping[int, int] | None = None,
        rejected: Mapping[int, Mapping[str, int]] | None = None,
        share: float = 0.0,
        rounds_skipped: float = 0.0,
        baseline_kept: float = 0.0,
    ) -> Calls:
        """Calls per role given what is known: stage A's actual calls once it ended (before, the
        example rounds its early stops skipped), each finished level's children, each level's
        rejections per beam prompt (parent id), and for the rewrites not yet seen the expected
        `share` of proposals rejected; `baseline_kept`: the chance that the starting prompt is
        among the best `finalists` (then it is not re-scored as an extra one): 0 or 1 once the
        run has ranked it, in between for an expectation before."""
        total: Calls = {}
        _plus(total, self.fixed)
        if stage_a is None:
            _plus(total, self.stage_a)
            _plus(total, self.example_round, -rounds_skipped)
        else:
            _plus(total, stage_a)
        beam, seen = 1.0, 0.0
        for level, (per_parent, per_child) in enumerate(self.levels):
            kids = self._children(
                level, beam, children or {}, (rejected or {}).get(level, {}), share
            )
            if level:
                _plus(total, per_parent, beam)
            _plus(total, per_child, kids)
            seen += kids
            beam = min(float(self.width), kids)
        finalists = seen if seen <= self.finalists else self.finalists + (1.0 - baseline_kept)
        _plus(total, self.per_finalist, finalists)
        return total

    def _children(
        self,
        level: int,
        beam: float,
        children: Mapping[int, int],
        rejected: Mapping[str, int],
        share: float,
    ) -> float:
        if level in children:
            return float(children[level])
        if level == 0:
            return 1.0
        # A beam prompt whose proposals are all rejected is carried on as its one child.
        seen = sum(max(1, self.actions - count) for count in rejected.values())
        unseen = max(0.0, beam - len(rejected))
        return seen + unseen * max(1.0, self.actions * (1 - share))


@dataclass
class Estimate:
    """Calls and tokens per role for a run with these settings, before it starts."""

    roles: dict[RoleName, RoleEstimate] = field(
        default_factory=lambda: {role: RoleEstimate() for role in ROLES}
    )
    shape: SearchShape | None = None
    levels: int = 0
    max_levels: int = 0
    examples: int = 0
    validation_queries: int = 0
    finalists: int = 0

    @property
    def calls(self) -> int:
        """Calls over all roles."""
        return sum(r.calls for r in self.roles.values())

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over all roles (an upper bound)."""
        return sum(r.prompt_tokens for r in self.roles.values())

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over all roles (an upper bound)."""
        return sum(r.completion_tokens for r in self.roles.values())


class _Counter:
    """Adds calls of one kind to the estimate: `replies` choices asked for in one logical call."""

    def __init__(self, settings: Settings, estimate: Estimate) -> None:
        self.settings = settings
        self.estimate = estimate

    def add(self, role: RoleName, prompt_text: str, replies: int = 1, times: int = 1) -> None:
        settings = self.settings.role(role)
        # Endpoints without `n` get one request per choice, each processing the prompt again.
        profile = effective_profile(settings, static_kind(settings))
        per_choice = not profile.supports_n
        requests = replies if per_choice else 1
        entry = self.estimate.roles[role]
        entry.calls += requests * times
        entry.prompt_tokens += tokens(prompt_text) * requests * times
        entry.written_prompt_tokens += (
            prompt_text.count(WRITTEN) // CHARS_PER_TOKEN * requests * times
        )
        entry.completion_tokens += settings.max_tokens * replies * times

    def structured_text(self, role: RoleName, system: str, user: str, schema: object) -> str:
        settings = self.settings.role(role)
        if effective_profile(settings, static_kind(settings)).structured_output != "json_schema":
            system += SCHEMA_IN_PROMPT + json.dumps(schema, ensure_ascii=False)
        return system + user


def _bounded(chars: int) -> str:
    return WRITTEN * chars


def estimate_run(settings: Settings, data: RunData, rubric: Rubric = BUILTIN_RUBRIC) -> Estimate:
    """Count the calls per role the run will make at most, with token upper bounds."""
    walk = _RunWalk(settings, data, rubric)
    shape = SearchShape(
        width=settings.search.width,
        actions=settings.search.actions,
        finalists=walk.plan.finalists,
    )
    walk.stage_a()
    shape.stage_a = walk.since({role: 0.0 for role in ROLES})
    shape.example_round = walk.example_round
    shape.rounds = settings.examples.rounds
    seen = walk.search_levels(shape)
    walk.validation_selections()
    before = walk.snapshot()
    walk.validation(seen)
    shape.per_finalist = walk.since(before, per=walk.finalists(seen))
    planned = shape.calls()
    shape.fixed = {
        role: entry.calls - planned.get(role, 0.0) for role, entry in walk.estimate.roles.items()
    }
    walk.estimate.shape = shape
    return walk.estimate


class _RunWalk:
    """Walks the run's schedule the way the graph would, counting each call it would make."""

    def __init__(self, settings: Settings, data: RunData, rubric: Rubric) -> None:
        self.settings = settings
        self.data = data
        self.estimate = Estimate()
        self.counter = _Counter(settings, self.estimate)
        self.plan = schedule(settings, len(data.examples), len(data.validation))
        rewards = settings.rewards
        self.pool = rubric.selectable()
        fixed = tuple(a.as_aspect() for a in rubric.aspects if a.applies != "selector")
        self.aspects = (*fixed, *self.pool[: rewards.max_aspects])
        # A metric-only run asks neither selector nor judge; a rubric of fixed aspects no selector.
        self.judged = rewards.llm_aspects
        self.selected: set[str] = set()
        self.critique = "\n".join(
            f"- {a.name}: 1/5. {_bounded(RATIONALE_MAX_CHARS)}" for a in self.aspects
        )
        self.examples = _longest(data.examples, settings.data.top_k)
        self.prompt_len = min(self.answer_chars("optimizer"), PROMPT_MAX_CHARS)
        self.base_answer_len = self.answer_chars("base")
        self.example_round: Calls = {}

    def snapshot(self) -> Calls:
        """The calls per role counted so far."""
        return {role: float(entry.calls) for role, entry in self.estimate.roles.items()}

    def since(self, before: Calls, per: float = 1.0) -> Calls:
        """The calls per role counted since `before`, divided by `per`."""
        now = self.snapshot()
        return {role: (now[role] - before[role]) / per for role in now if now[role] != before[role]}

    def answer_chars(self, role: RoleName) -> int:
        return self.settings.role(role).max_tokens * CHARS_PER_TOKEN

    def select(self, query: str) -> None:
        # A query's aspects are chosen once per run (and reused from earlier runs' records).
        if not (self.judged and self.pool) or query in self.selected:
            return
        self.selected.add(query)
        rewards = self.settings.rewards
        system, user = SELECT_ASPECTS.render(
            min_aspects=str(rewards.min_aspects),
            max_aspects=str(rewards.max_aspects),
            catalogue=format_aspects(self.pool),
            new_aspects_rule=NEW_ASPECTS_ALLOWED
            if rewards.allow_new_aspects
            else NEW_ASPECTS_FORBIDDEN,
            query=query,
        )
        self.counter.add("selector", self.counter.structured_text("selector", system, user, {}))

    def judge(self, query: str, answer_len: int, times: int = 1) -> None:
        if not self.judged:
            return
        system, user = JUDGE_ANSWER.render(
            aspects=format_aspects(self.aspects), query=query, answer=_bounded(answer_len)
        )
        text = self.counter.structured_text("judge", system, user, {})
        self.counter.add("judge", text, times=times)

    def stage_a(self) -> None:
        """Stage A: each example judged, rewritten `rounds` times, and its rewrites judged."""
        stage = self.settings.examples
        if not (self.plan.stage_a_size and self.judged):
            return
        self.estimate.examples = self.plan.stage_a_size
        rewrite_len = min(self.answer_chars("optimizer"), ANSWER_MAX_CHARS)
        for example in self.data.examples[: self.plan.stage_a_size]:
            self.select(example.query)
            self.judge(example.query, len(example.answer))
            before = self.snapshot()
            system, user = REWRITE_ANSWER.render(
                max_words=str(ANSWER_WORDS),
                query=example.query,
                answer=example.answer,
                critique=self.critique,
            )
            text = self.counter.structured_text("optimizer", system, user, {})
            self.counter.add("optimizer", text, replies=stage.beam_width, times=stage.rounds)
            self.judge(example.query, rewrite_len, times=stage.rounds * stage.beam_width)
            self.example_round = self.since(before, per=stage.rounds)

    def search_levels(self, shape: SearchShape) -> int:
        """Stage B's levels: rewrites of the beam, then each child answered and judged.

        Returns how many prompts the search saw (the finalists are drawn from them); each
        level's calls per beam prompt and per child go to `shape`.
        """
        settings, search = self.settings, self.settings.search
        order = seeded_order([q.id for q in self.data.train], settings.seed)
        self.estimate.levels = self.plan.levels
        self.estimate.max_levels = self.plan.max_levels
        beam = 1
        seen = 0
        for level in range(self.estimate.max_levels):
            queries = level_batch(order, self.data.train, level, self.plan.queries_per_level)
            for query in queries:
                self.select(query.query)
            prompt = search.initial_prompt if level == 0 else _bounded(self.prompt_len)
            children = beam * search.actions if level else 1
            before = self.snapshot()
            if level:
                self.rewrite(level, prompt, queries, beam)
            per_parent = self.since(before, per=beam)
            before = self.snapshot()
            self.score(prompt, queries, children)
            per_child = self.since(before, per=children)
            shape.levels.append((per_parent, per_child))
            seen += children
            beam = min(search.width, children)
        return seen

    def score(self, prompt: str, queries: list[Query], children: int) -> None:
        """Each child answered and judged on each of the level's queries."""
        for query in queries:
            base = format_base_prompt(
                prompt, self.examples, query.query, mode=self.settings.base.mode
            )
            self.counter.add("base", base.rendered(), times=children)
            self.judge(query.query, self.base_answer_len, times=children)

    def rewrite(self, level: int, prompt: str, queries: list[Query], beam: int) -> int:
        """The optimizer's rewrites of each beam prompt at `level`; returns the children."""
        search = self.settings.search
        history = "\n".join(
            f"{i + 1}. {_bounded(self.prompt_len)}" for i in range(min(level, search.history))
        )
        # The optimizer sees the answers of the levels so far, up to `feedback_queries`.
        cases = "\n\n".join(
            REWRITE_CASE.render(
                number=str(number),
                query=queries[0].query if queries else "",
                answer=_bounded(self.base_answer_len),
                critique=self.critique,
            )[1]
            for number in range(1, min(search.feedback_queries, level * search.batch_size) + 1)
        )
        system, user = REWRITE_PROMPT.render(
            max_new_bullets=str(search.max_new_bullets),
            max_bullets=str(search.max_bullets),
            prompt=prompt,
            history=history or "(none)",
            cases=cases,
        )
        text = self.counter.structured_text("optimizer", system, user, PromptProposal)
        self.counter.add("optimizer", text, replies=search.actions, times=beam)
        return beam * search.actions

    def finalists(self, seen: int) -> int:
        """The prompts the validation round re-scores, of the `seen` ones."""
        # When every prompt seen is kept, the starting prompt is one of them already.
        return seen if seen <= self.plan.finalists else self.plan.finalists + 1

    def validation_selections(self) -> None:
        """The aspect choices of the validation queries (once each, whatever the finalists)."""
        for query in self.data.validation[: self.plan.validation_size]:
            self.select(query.query)

    def validation(self, seen: int) -> None:
        """The best distinct prompts seen, plus the starting prompt unless among them."""
        validation = self.data.validation[: self.plan.validation_size]
        if not validation:
            return
        self.estimate.validation_queries = len(validation)
        finalists = self.finalists(seen)
        self.estimate.finalists = finalists
        for query in validation:
            base = format_base_prompt(
                _bounded(self.prompt_len), self.examples, query.query, mode=self.settings.base.mode
            )
            self.counter.add("base", base.rendered(), times=finalists)
            self.judge(query.query, self.base_answer_len, times=finalists)


def _longest(examples: list[Example], k: int) -> list[Example]:
    return sorted(examples, key=lambda e: len(e.query) + len(e.answer), reverse=True)[:k]


def describe(estimate: Estimate) -> str:
    """A few lines for the start of `drpo optimize` and for `drpo optimize --estimate`."""
    parts = [f"{role} {e.calls}" for role, e in estimate.roles.items() if e.calls or role == "base"]
    levels = (
        f"{estimate.levels} levels"
        if estimate.levels == estimate.max_levels
        else f"{estimate.levels}–{estimate.max_levels} levels (skip rule)"
    )
    validation = (
        f"{estimate.finalists} finalists × {estimate.validation_queries} validation queries"
        if estimate.validation_queries
        else "no validation round"
    )
    lines = [
        f"estimate: at most {estimate.calls} model calls ({', '.join(parts)}); "
        f"{estimate.examples} stage A examples, {levels}, {validation}",
        f"  tokens: ≈{estimate.prompt_tokens} prompt + ≤{estimate.completion_tokens} completion "
        "(upper bounds: model-written text counted at max_tokens; re-asked replies not included)",
    ]
    return "\n".join(lines)
