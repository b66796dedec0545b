"""Read an optimization run back out of the run store: convergence, beam tree, diffs, scores, cost.

These are the analyses the method's authors call for on a run: reward per level and per beam
with its spread (convergence), the tree the beam search grew, what each transition changed in
the prompt, the judge's per-aspect scores, and what it all cost.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from drpo.checkpoints.store import RunStore
from drpo.evals.stats import mean, stdev


@dataclass(frozen=True)
class LevelStats:
    """The rewards of one level's candidates: the spread of what the search saw."""

    level: int
    candidates: int
    scored: int
    mean: float | None
    low: float | None
    high: float | None
    spread: float | None  # sample standard deviation of the level rewards
    best_value: float | None  # the best path value among the level's survivors


@dataclass
class TreeNode:
    """A candidate in the run's search tree, with its children."""

    id: str
    level: int
    prompt: str
    level_reward: float | None
    value: float | None
    carried: bool
    survived: bool
    best: bool
    children: list[TreeNode] = field(default_factory=list)


@dataclass(frozen=True)
class Transition:
    """One parent → child edit in the search, with its diff and scores."""

    parent_id: str
    child_id: str
    level: int
    reward: float | None
    value: float | None
    survived: bool
    carried: bool
    diff: str  # unified diff, parent → child ("" when the prompt was carried unchanged)
    changed: float  # fraction of the prompt changed (1 - difflib ratio)


@dataclass
class RunAnalysis:
    """Everything the run report shows about one run."""

    run: dict[str, Any]
    settings: dict[str, Any]
    levels: list[LevelStats]
    beams: dict[str, list[tuple[int, float | None]]]  # survivor lineage → (level, reward) path
    tree: list[TreeNode]
    transitions: list[Transition]
    aspects: list[dict[str, Any]]  # per stage × aspect: mean, judged, missing
    aspect_by_level: list[dict[str, Any]]
    cost: list[dict[str, Any]]
    totals: dict[str, Any]
    examples: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    # Evaluator reliability: how far the final prompt moved from the one the search started with.
    start_prompt: str = ""
    final_diff: str = ""
    final_changed: float | None = None


def candidates_of(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """A run's candidates by level, then creation time."""
    return list(
        store.db["candidates"].rows_where("run_id = ?", [run_id], order_by="level, created_at")
    )


def convergence(candidates: list[dict[str, Any]]) -> list[LevelStats]:
    """Per level: how many candidates, the mean / min / max / spread of their level rewards."""
    by_level: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for candidate in candidates:
        by_level[int(candidate["level"])].append(candidate)
    levels = []
    for level in sorted(by_level):
        rows = by_level[level]
        rewards = [float(r["level_reward"]) for r in rows if r["level_reward"] is not None]
        survivors = [r["value"] for r in rows if r["survived"] and r["value"] is not None]
        levels.append(
            LevelStats(
                level=level,
                candidates=len(rows),
                scored=len(rewards),
                mean=mean(rewards),
                low=min(rewards) if rewards else None,
                high=max(rewards) if rewards else None,
                spread=stdev(rewards),
                best_value=max(survivors) if survivors else None,
            )
        )
    return levels


def beam_paths(candidates: list[dict[str, Any]]) -> dict[str, list[tuple[int, float | None]]]:
    """The reward path of every candidate that survived the last level it appears in.

    Each path is (level, level reward) from the root down to that beam, so a plot shows how
    each final beam got where it is.
    """
    by_id = {c["id"]: c for c in candidates}
    if not candidates:
        return {}
    last_level = max(int(c["level"]) for c in candidates)
    finals = [c for c in candidates if c["survived"] and int(c["level"]) == last_level]
    paths = {}
    for final in finals:
        path: list[tuple[int, float | None]] = []
        current: dict[str, Any] | None = final
        while current is not None:
            path.append((int(current["level"]), current["level_reward"]))
            parent = current["parent_id"]
            current = by_id.get(parent) if parent else None
        paths[final["id"]] = list(reversed(path))
    return paths


def beam_tree(candidates: list[dict[str, Any]], best_id: str | None) -> list[TreeNode]:
    """The search tree: every candidate as a node under its parent."""
    nodes = {
        c["id"]: TreeNode(
            id=c["id"],
            level=int(c["level"]),
            prompt=c["prompt"],
            level_reward=c["level_reward"],
            value=c["value"],
            carried=bool(c["carried"]),
            survived=bool(c["survived"]),
            best=c["id"] == best_id,
        )
        for c in candidates
    }
    roots = []
    for candidate in candidates:
        node = nodes[candidate["id"]]
        parent = nodes.get(candidate["parent_id"] or "")
        if parent is None:
            roots.append(node)  # the root, or a fork's first prompt (its parent is in another run)
        else:
            parent.children.append(node)
    return roots


def prompt_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """A unified diff between two prompts."""
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), before_name, after_name, lineterm=""
    )
    return "\n".join(lines)


def transitions(candidates: list[dict[str, Any]]) -> list[Transition]:
    """Every parent → child edit, with how much the prompt changed and the value it gained."""
    by_id = {c["id"]: c for c in candidates}
    result = []
    for child in candidates:
        parent = by_id.get(child["parent_id"] or "")
        if parent is None:
            continue
        ratio = difflib.SequenceMatcher(None, parent["prompt"], child["prompt"]).ratio()
        result.append(
            Transition(
                parent_id=parent["id"],
                child_id=child["id"],
                level=int(child["level"]),
                reward=child["level_reward"],
                value=child["value"],
                survived=bool(child["survived"]),
                carried=bool(child["carried"]),
                diff=prompt_diff(parent["prompt"], child["prompt"], parent["id"], child["id"]),
                changed=1.0 - ratio,
            )
        )
    return result


def aspect_scores(
    store: RunStore, run_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The judge's scores per stage and aspect, and per level and aspect (search answers)."""
    per_stage = list(
        store.db.query(
            "select a.stage, j.aspect, avg(j.score) as mean, count(j.score) as judged, "
            "sum(j.score is null) as missing from judgements j join answers a "
            "on a.run_id = j.run_id and a.id = j.answer_id where j.run_id = ? "
            "and j.aspect != '(judge)' group by a.stage, j.aspect order by a.stage, j.aspect",
            [run_id],
        )
    )
    per_level = list(
        store.db.query(
            "select a.level, j.aspect, avg(j.score) as mean, count(j.score) as judged "
            "from judgements j join answers a on a.run_id = j.run_id and a.id = j.answer_id "
            "where j.run_id = ? and a.stage = 'search' and j.aspect != '(judge)' "
            "group by a.level, j.aspect order by a.level, j.aspect",
            [run_id],
        )
    )
    return per_stage, per_level


def analyse_run(store: RunStore, run_id: str) -> RunAnalysis:
    """Everything the run report shows (raises KeyError for an unknown run)."""
    run = store.run(run_id)
    if run is None:
        raise KeyError(run_id)
    candidates = candidates_of(store, run_id)
    per_stage, per_level = aspect_scores(store, run_id)
    cost, totals = store.cost_by_role(run_id)
    examples = list(store.db["examples"].rows_where("run_id = ?", [run_id]))
    settings = json.loads(run["settings"] or "{}")
    start = str(settings.get("search", {}).get("initial_prompt", ""))
    final = run["final_prompt"] or ""
    return RunAnalysis(
        run=run,
        settings=settings,
        levels=convergence(candidates),
        beams=beam_paths(candidates),
        tree=beam_tree(candidates, run["best_candidate_id"]),
        transitions=transitions(candidates),
        aspects=per_stage,
        aspect_by_level=per_level,
        cost=cost,
        totals=totals,
        examples=examples,
        candidates=candidates,
        start_prompt=start,
        final_diff=prompt_diff(start, final, "starting prompt", "final prompt") if final else "",
        final_changed=(
            1.0 - difflib.SequenceMatcher(None, start, final).ratio() if final else None
        ),
    )
