"""Build the aligned model's input for a new query, exactly as the search built it.

The aligned model is the base model + the optimized system prompt + the top-K optimized examples
retrieved for each incoming query. Both come from one function, `format_base_prompt`, and one
retriever, so a deployed prompt is byte for byte what was scored during optimization.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from drpo.backends.retrieval import RetrievalKind, build_retriever
from drpo.checkpoints.store import RunStore
from drpo.graph.export import EXPORT_FORMAT, export_record
from drpo.prompts.base import BasePrompt, format_base_prompt
from drpo.state.types import Example


class PromptFileError(ValueError):
    """An exported prompt file is missing, malformed or of another format."""


@dataclass(frozen=True)
class AlignedPrompt:
    """An optimized prompt ready to answer queries: system prompt, examples and retrieval."""

    system_prompt: str
    examples: tuple[Example, ...]
    top_k: int
    mode: Literal["chat", "completion"] = "chat"
    retrieval: RetrievalKind = "auto"

    def build(self, query: str) -> BasePrompt:
        """The base model's prompt for `query`, with its top-k retrieved examples."""
        retriever = build_retriever(list(self.examples), self.retrieval)
        chosen = retriever.top_k(query, self.top_k)
        return format_base_prompt(self.system_prompt, chosen, query, mode=self.mode)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AlignedPrompt:
        """The prompt in a `drpo export --format json` record."""
        if record.get("format") != EXPORT_FORMAT:
            raise PromptFileError(f"not a drpo prompt export (format {record.get('format')!r})")
        try:
            return cls(
                system_prompt=str(record["system_prompt"]),
                examples=tuple(Example.model_validate(e) for e in record["examples"]),
                top_k=int(record["top_k"]),
                mode=record.get("base_mode", "chat"),
                # The kind the run resolved and used; older exports only have the setting.
                retrieval=record.get("retrieval")
                or record.get("settings", {}).get("data", {}).get("retrieval", "auto"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PromptFileError(f"invalid drpo prompt export: {exc}") from None

    @classmethod
    def from_file(cls, path: Path) -> AlignedPrompt:
        """The prompt in an export file; PromptFileError names what is wrong with it."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PromptFileError(f"prompt file not found: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PromptFileError(f"prompt file {path} is not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise PromptFileError(f"prompt file {path} does not hold a JSON object")
        return cls.from_record(record)

    @classmethod
    def from_run(cls, store: RunStore, run_id: str) -> AlignedPrompt:
        """The prompt a run found, read from the run store."""
        row = store.run(run_id)
        if row is None:
            raise PromptFileError(f"no run {run_id!r} in {store.path}")
        return cls.from_record(export_record(store, row))
