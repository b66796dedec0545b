"""Evaluation conditions: alignment prompts applied to one base model, and the overlap guard.

A condition is an `AlignedPrompt` (system prompt + examples retrieved per query) with a name.
All conditions are formatted by the same `format_base_prompt` the search used, in the mode of
the base model under evaluation, so the only thing that differs between them is the prompt.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drpo.backends.retrieval import RetrievalKind
from drpo.checkpoints.store import RunStore
from drpo.data.loaders import DataFileError, load_examples, seed_examples
from drpo.evals.templates import PLAIN_PROMPT, URIAL_STYLE_PROMPT
from drpo.graph.api import RunError, load_run_data
from drpo.graph.inference import AlignedPrompt, PromptFileError
from drpo.state.settings import ConfigError, Settings, settings_from_stored
from drpo.state.types import Query

KNOWN_CONDITIONS = ("plain", "urial", "drpo", "file")


@dataclass(frozen=True)
class Condition:
    """One prompt under evaluation, with its name and where it came from."""

    name: str
    prompt: AlignedPrompt
    source: str  # where the prompt came from, for the report

    def record(self) -> dict[str, object]:
        """The condition as stored with the evaluation (its prompt and examples included)."""
        return {
            "name": self.name,
            "source": self.source,
            "system_prompt": self.prompt.system_prompt,
            "examples": len(self.prompt.examples),
            "top_k": self.prompt.top_k,
            "mode": self.prompt.mode,
        }


def build_conditions(
    names: Sequence[str],
    settings: Settings,
    store: RunStore | None,
    run_id: str | None,
    prompt_file: Path | None,
) -> list[Condition]:
    """Build the named conditions; `drpo` needs a run, `file` needs a prompt file."""
    mode: Literal["chat", "completion"] = settings.base.mode
    retrieval = settings.data.retrieval
    conditions: list[Condition] = []
    for raw in names:
        name = raw.strip().lower()
        if name in {c.name for c in conditions}:
            raise ConfigError(f"--conditions names {name!r} twice")
        if name == "plain":
            prompt = AlignedPrompt(PLAIN_PROMPT, (), 0, mode, retrieval)
            conditions.append(Condition("plain", prompt, "built-in, no examples"))
        elif name == "urial":
            examples = (
                load_examples(settings.data.examples) if settings.data.examples else seed_examples()
            )
            prompt = AlignedPrompt(
                URIAL_STYLE_PROMPT, tuple(examples), settings.data.top_k, mode, retrieval
            )
            source = (
                f"drpo's URIAL-style text + top {settings.data.top_k} of "
                f"{len(examples)} unoptimized examples"
            )
            conditions.append(Condition("urial", prompt, source))
        elif name == "drpo":
            if run_id is None or store is None:
                raise ConfigError("the drpo condition needs --run RUN")
            prompt = AlignedPrompt.from_run(store, run_id)
            conditions.append(
                Condition("drpo", dataclasses.replace(prompt, mode=mode), f"run {run_id}")
            )
        elif name == "file":
            if prompt_file is None:
                raise ConfigError("the file condition needs --prompt-file FILE")
            prompt = prompt_from_file(prompt_file, retrieval)
            conditions.append(
                Condition("file", dataclasses.replace(prompt, mode=mode), f"file {prompt_file}")
            )
        else:
            raise ConfigError(
                f"unknown condition {name!r} (choose from {', '.join(KNOWN_CONDITIONS)})"
            )
    if not conditions:
        raise ConfigError("--conditions names no condition")
    return conditions


def prompt_from_file(path: Path, retrieval: RetrievalKind) -> AlignedPrompt:
    """A `drpo export -f json` file (prompt + examples), or any other file as a bare system
    prompt without examples (e.g. a hand-written known-good prompt in a .txt file)."""
    if path.suffix.lower() == ".json":
        return AlignedPrompt.from_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"prompt file not found: {path}") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise PromptFileError(f"prompt file {path} is not a UTF-8 text file") from None
    if not text.strip():
        raise PromptFileError(f"prompt file {path} is empty")
    return AlignedPrompt(text.strip(), (), 0, "chat", retrieval)


def default_condition_names(run_id: str | None, prompt_file: Path | None) -> list[str]:
    """The conditions to compare when none are given: the baselines, then drpo and/or the file."""
    names = ["plain", "urial"]
    if run_id is not None:
        names.append("drpo")
    if prompt_file is not None:
        names.append("file")
    return names


def parse_pairs(spec: str | None, conditions: Sequence[str]) -> list[tuple[str, str]]:
    """`drpo:plain,drpo:urial` → pairs; default: drpo (else file) against every other condition.

    `none` turns pairwise judging off.
    """
    if spec is not None and spec.strip().lower() == "none":
        return []
    if spec is None:
        lead = next((c for c in ("drpo", "file") if c in conditions), None)
        return [(lead, other) for other in conditions if lead is not None and other != lead]
    pairs: list[tuple[str, str]] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        x, sep, y = part.partition(":")
        x, y = x.strip().lower(), y.strip().lower()
        if not sep or not x or not y:
            raise ConfigError(f"--pairwise expects X:Y pairs, got {part!r}")
        for name in (x, y):
            if name not in conditions:
                raise ConfigError(f"--pairwise names {name!r}, which is not among the conditions")
        if x == y:
            raise ConfigError(f"--pairwise pairs {x!r} with itself")
        if (x, y) not in pairs:
            pairs.append((x, y))
    return pairs


# ---- never evaluate on optimization data -----------------------------------------------------


def normalise(text: str) -> str:
    """Whitespace-normalised text: the identity used to detect overlap."""
    return " ".join(text.split())


def optimization_texts(store: RunStore, run_id: str) -> dict[str, str]:
    """Every query a run optimized on (normalised text → where it was used).

    The run's training and validation sets and its in-context examples' queries, read from the
    data the run's stored settings name, plus every query the run store shows it answered (so
    the check still works when a data file has moved since the run).
    """
    row = store.run(run_id)
    if row is None:
        raise RunError(f"no run {run_id!r} in {store.path}")
    used: dict[str, str] = {}
    try:
        data = load_run_data(settings_from_stored(json.loads(row["settings"])))
    except (ConfigError, DataFileError):
        data = None
    if data is not None:
        for label, items in (("train", data.train), ("validation", data.validation)):
            for query in items:
                used.setdefault(normalise(query.query), label)
        for example in data.examples:
            used.setdefault(normalise(example.query), "example")
    for answered in store.db.query(
        "select distinct query, stage from answers where run_id = ?", [run_id]
    ):
        label = "validation" if answered["stage"] == "validate" else "train"
        used.setdefault(normalise(answered["query"]), label)
    for example in json.loads(row["examples"]) if row.get("examples") else []:
        used.setdefault(normalise(example["query"]), "example")
    return used


@dataclass(frozen=True)
class Overlap:
    """An evaluation query that the evaluated run also trained or validated on."""

    query_id: str
    query: str
    run_id: str
    used_as: str


def drop_overlap(
    queries: Sequence[Query], store: RunStore | None, run_ids: Sequence[str]
) -> tuple[list[Query], list[Overlap]]:
    """Remove queries whose text a run optimized on; return the kept ones and what was dropped."""
    if store is None or not run_ids:
        return list(queries), []
    used = {run_id: optimization_texts(store, run_id) for run_id in run_ids}
    kept: list[Query] = []
    dropped: list[Overlap] = []
    for query in queries:
        text = normalise(query.query)
        hit = next(((r, texts[text]) for r, texts in used.items() if text in texts), None)
        if hit is None:
            kept.append(query)
        else:
            dropped.append(Overlap(query.id, query.query, hit[0], hit[1]))
    return kept, dropped
