"""Export a run's alignment prompt with its provenance (json, md, txt).

The JSON form is also what `drpo serve` can deploy without the run database.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from drpo.checkpoints.store import RunStore
from drpo.graph.api import RunError
from drpo.state.settings import ROLES

EXPORT_FORMAT = "drpo-prompt/1"


def _version() -> str:
    try:
        return version("drpo")
    except PackageNotFoundError:
        return "unknown"


def export_record(db: RunStore, row: dict[str, Any]) -> dict[str, Any]:
    """What an export holds: the prompt, its examples, settings, scores and cost."""
    if not row.get("final_prompt") and not row.get("best_candidate_id"):
        raise RunError(f"run {row['id']} has no scored prompt yet")
    best = (
        db.candidate(row["id"], row["best_candidate_id"]) if row.get("best_candidate_id") else None
    )
    prompt = row.get("final_prompt") or (best["prompt"] if best else "")
    settings = json.loads(row["settings"])
    # The whole example set the prompt was optimized with (stage A's rewrites included).
    examples = json.loads(row["examples"]) if row.get("examples") else []
    cost = db.run_cost(row["id"])
    return {
        "format": EXPORT_FORMAT,
        "drpo_version": _version(),
        "run_id": row["id"],
        "status": row["status"],
        "system_prompt": prompt,
        "examples": examples,
        "top_k": settings["data"]["top_k"],
        "base_mode": settings["base"]["mode"],
        "models": {
            role: {"model": settings[role]["model"], "endpoint": settings[role]["endpoint"]}
            for role in ROLES
        },
        "scores": {
            "train_value": row["train_value"],
            "validation_value": row["validation_value"],
            "starting_prompt_validation_value": row["baseline_validation_value"],
        },
        # The run's result is its starting prompt: no rewrite validated better.
        "no_better_prompt_found": bool(row.get("no_better_prompt")),
        "retrieval": row.get("retrieval"),
        "cost": cost.model_dump(),
        "settings": settings,
    }


def render_export(db: RunStore, row: dict[str, Any], fmt: str) -> str:
    """The export in `fmt` (json, md or txt)."""
    record = export_record(db, row)
    if fmt == "json":
        return json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    if fmt == "txt":
        return str(record["system_prompt"]).rstrip() + "\n"
    scores = record["scores"]
    lines = [
        f"# Alignment prompt from drpo run {record['run_id']}",
        "",
        "```text",
        record["system_prompt"].rstrip(),
        "```",
        "",
        "## Provenance",
        "",
        f"- status: {record['status']}; drpo {record['drpo_version']}",
        *(
            ["- no better prompt found: this is the starting prompt; no rewrite beat it"]
            if record["no_better_prompt_found"]
            else []
        ),
        *(f"- {role}: `{m['model']}` at `{m['endpoint']}`" for role, m in record["models"].items()),
        f"- train value: {scores['train_value']}; validation value: {scores['validation_value']} "
        f"(starting prompt: {scores['starting_prompt_validation_value']})",
        f"- cost: {record['cost']['calls']} calls, {record['cost']['prompt_tokens']} prompt + "
        f"{record['cost']['completion_tokens']} completion tokens",
        f"- at inference, retrieve the top {record['top_k']} of the examples below per query",
    ]
    if record["examples"]:
        lines += ["", "## In-context examples", ""]
        for example in record["examples"]:
            lines += [
                f"### {example['id']}",
                "",
                f"**Query:** {example['query']}",
                "",
                example["answer"].rstrip(),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"
