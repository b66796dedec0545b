"""The one function that builds the base model's input from prompt, examples and query.

Optimization and inference (`drpo serve`, evaluation) both call `format_base_prompt`, so the
prompt a model was optimized with is byte for byte the prompt it is deployed with. The shared
prefix (alignment prompt, then examples) comes first so server prefix caches can reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from drpo.state.types import Example

QUERY_MARK = "# Query:"
ANSWER_MARK = "# Answer:"
END_MARK = "# END"
COMPLETION_HEADER = (
    "Below is a conversation between a curious user and an AI assistant, followed by "
    "instructions the assistant always follows."
)
# Stop sequences for completion mode: the model must not write the next turn itself.
COMPLETION_STOP: tuple[str, ...] = (END_MARK, f"\n{QUERY_MARK}", "\n\n\n\n")


@dataclass(frozen=True)
class BasePrompt:
    """The base model's input in one of the two modes; exactly one of the shapes is set."""

    mode: Literal["chat", "completion"]
    system: str = ""
    user: str = ""
    text: str = ""

    @property
    def stop(self) -> tuple[str, ...]:
        """The stop strings a completion-mode request needs (none in chat mode)."""
        return COMPLETION_STOP if self.mode == "completion" else ()

    def rendered(self) -> str:
        """A single string that identifies the prompt exactly (for tests and logs)."""
        if self.mode == "chat":
            return f"[system]\n{self.system}\n[user]\n{self.user}"
        return self.text


def _example_block(example: Example) -> str:
    query, answer = example.query.strip(), example.answer.strip()
    return f"{QUERY_MARK}\n{query}\n\n{ANSWER_MARK}\n{answer}\n{END_MARK}"


def format_base_prompt(
    system_prompt: str,
    examples: Sequence[Example],
    query: str,
    mode: Literal["chat", "completion"] = "chat",
) -> BasePrompt:
    """Build the base model's prompt: alignment prompt, retrieved examples, then the query."""
    blocks = [_example_block(example) for example in examples]
    if mode == "chat":
        system = system_prompt.strip()
        if blocks:
            system += "\n\nExamples of how you answer:\n\n" + "\n\n".join(blocks)
        return BasePrompt(mode="chat", system=system, user=query)
    parts = [f"# Instructions\n\n{system_prompt.strip()}", *blocks]
    parts.append(f"{QUERY_MARK}\n{query.strip()}\n\n{ANSWER_MARK}\n")
    return BasePrompt(mode="completion", text=COMPLETION_HEADER + "\n\n" + "\n\n".join(parts))
