"""The Python API of evaluation: `evaluate(...)` plans, runs and summarises one evaluation.

```python
from drpo.state.settings import load_settings
from drpo.evals.api import EvalRequest, evaluate

summary = evaluate(EvalRequest(settings=load_settings(), run_id="RUN",
                               queries="mtbench:30,harmbench:10"))
print(summary.pairs[0].result.rate, summary.pairs[0].result.ci)
```

`metrics="refusal"` measures only the judge-free refusal and over-refusal rates (e.g. on
`harmbench:50,overrefusal`): the base model answers, no judge is called.

Cross-model transfer and evaluator reliability are configurations of the same call: evaluate a
run's prompt with another `base` model (`--set base.model=...`), or evaluate a known-good prompt
file next to the prompt a search started from it produced (`--prompt-file`, `--pairwise
file:drpo`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from drpo.backends.preflight import check_settings
from drpo.checkpoints.store import RunStore
from drpo.evals.conditions import (
    build_conditions,
    default_condition_names,
    drop_overlap,
    parse_pairs,
)
from drpo.evals.datasets import resolve_queries
from drpo.evals.harness import EvalPlan, Progress, run_evaluation
from drpo.evals.records import EvalRecorder, new_eval_id
from drpo.evals.role_models import open_role_models
from drpo.evals.summary import EvalSummary, summarize
from drpo.graph.api import RunError
from drpo.graph.inference import AlignedPrompt, PromptFileError
from drpo.state.settings import ConfigError, Settings


@dataclass
class EvalRequest:
    """What the user asked for; `None` fields take the defaults described on each."""

    settings: Settings
    queries: str  # "mtbench:30,harmbench:10", a query file, or a mix
    run_id: str | None = None  # the DRPO condition's run
    conditions: list[str] | None = None  # default: plain, urial (+ drpo, + file)
    prompt_file: Path | None = None
    pairwise: str | None = None  # "drpo:plain,drpo:urial"; default: drpo against the others
    seed: int = 0
    data_dir: Path | None = None
    metrics: str = "judge,refusal"  # "refusal" alone answers the queries and calls no judge


# "judge": absolute scores and pairwise verdicts; "pairwise": the verdicts alone (a judged
# win rate at a fraction of the judge calls); "refusal": the judge-free rates.
METRICS = ("judge", "pairwise", "refusal")


def parse_metrics(spec: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(m.strip().lower() for m in spec.split(",") if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    if not names:
        raise ConfigError("--metrics names no metric")
    return names


def roles_used(settings: Settings, judge: bool) -> Settings:
    """An evaluation uses only the base and judge roles (the base alone without the judge):
    point the others at one that is used, so an unused role never starts a model server or
    needs a key."""
    used = settings.judge if judge else settings.base
    return settings.model_copy(update={"selector": used, "optimizer": used, "judge": used})


def plan_evaluation(request: EvalRequest, store: RunStore) -> EvalPlan:
    """Resolve conditions, queries, pairs and the overlap check before any model call."""
    metrics = parse_metrics(request.metrics)
    judge = "judge" in metrics or "pairwise" in metrics
    if not judge and request.pairwise not in (None, "none"):
        raise ConfigError("--pairwise needs the judge: add 'judge' or 'pairwise' to --metrics")
    settings = roles_used(request.settings, judge)
    if request.run_id is not None and store.run(request.run_id) is None:
        raise RunError(f"no run {request.run_id!r} in {store.path}")
    names = request.conditions or default_condition_names(request.run_id, request.prompt_file)
    try:
        conditions = build_conditions(names, settings, store, request.run_id, request.prompt_file)
    except PromptFileError as exc:
        raise RunError(str(exc)) from None
    pairs = parse_pairs(request.pairwise, [c.name for c in conditions]) if judge else []
    queries = resolve_queries(request.queries, request.seed, request.data_dir)
    runs = [request.run_id] if request.run_id else []
    if request.prompt_file is not None:
        source_run = _run_of_prompt_file(request.prompt_file)
        if source_run and source_run not in runs and store.run(source_run) is not None:
            runs.append(source_run)
    kept, dropped = drop_overlap(queries, store, runs)
    if not kept:
        raise ConfigError("every evaluation query was used in optimization; nothing is held out")
    return EvalPlan(
        eval_id=new_eval_id(),
        settings=settings,
        conditions=conditions,
        queries=kept,
        pairs=pairs,
        drpo_run=request.run_id,
        overlap=dropped,
        seed=request.seed,
        metrics=metrics,
    )


def _run_of_prompt_file(path: Path) -> str | None:
    """The run an exported prompt came from, so its queries are checked for overlap too."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    run_id = record.get("run_id") if isinstance(record, dict) else None
    return str(run_id) if run_id else None


async def execute_plan(
    plan: EvalPlan, store: RunStore, progress: Progress | None = None
) -> EvalSummary:
    """Start the model servers the plan needs, run it, and summarise the stored results."""
    settings = plan.settings
    await asyncio.to_thread(check_settings, settings)
    async with AsyncExitStack() as stack:
        models = await open_role_models(stack, settings, store, plan.eval_id, ("base", "judge"))
        await run_evaluation(plan, models, EvalRecorder(store, plan.eval_id), progress)
    return summarize(store, plan.eval_id)


def evaluate(
    request: EvalRequest,
    progress: Progress | None = None,
    on_plan: Callable[[EvalPlan], None] | None = None,
) -> EvalSummary:
    """Plan and run an evaluation, storing it in the settings' run store."""
    store = RunStore(request.settings.store)
    try:
        plan = plan_evaluation(request, store)
        if on_plan is not None:
            on_plan(plan)
        return asyncio.run(execute_plan(plan, store, progress))
    finally:
        store.close()


__all__ = ["AlignedPrompt", "EvalRequest", "evaluate", "execute_plan", "plan_evaluation"]
