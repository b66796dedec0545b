"""drpo's result as LangChain objects: the aligned prompt and an aligned chat model as Runnables.

`aligned_prompt(run_or_file)` is a Runnable that turns an input into the base model's prompt
exactly as the search built it: the optimized system prompt plus the top-K optimized examples
retrieved for the input's query, formatted by the same `AlignedPrompt.build` →
`format_base_prompt` that scored the candidates. `AlignedChat(model=..., run=...)` pipes that
into any chat model, so `.invoke`, `.stream`, `.batch` (and their async forms) work and it can be
called inside a LangGraph node.

An input is a query string, a dict with `query` (or `input`), or a list of chat messages: then
the examples are retrieved for the last human message, and the caller's system messages are
kept after the alignment prompt under `# Additional instructions` — the rule `drpo serve` uses.

This folder is `langchain_runnables/`, mapped to `drpo.langchain` in pyproject.toml: a folder
named `langchain` would shadow the real package when Python runs from the repository root.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    SystemMessage,
)
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from drpo.checkpoints.store import RunStore
from drpo.graph.inference import AlignedPrompt
from drpo.prompts.base import COMPLETION_STOP
from drpo.state.types import RunResult

__all__ = ["AlignedChat", "aligned_prompt", "load_aligned"]

# The same marker `drpo serve` puts between the alignment prompt and a client's system text.
CLIENT_SYSTEM_MARKER = "\n\n# Additional instructions\n\n"
DEFAULT_STORE = Path("drpo-runs/runs.db")

RunSource: TypeAlias = AlignedPrompt | RunResult | str | os.PathLike[str]
AlignedInput: TypeAlias = str | Mapping[str, Any] | Sequence[BaseMessage]


def load_aligned(
    run_or_file: RunSource, store: str | os.PathLike[str] = DEFAULT_STORE
) -> AlignedPrompt:
    """The aligned prompt of a run (id or RunResult, from `store`) or of an exported .json file."""
    if isinstance(run_or_file, AlignedPrompt):
        return run_or_file
    if isinstance(run_or_file, RunResult):
        run_or_file = run_or_file.run_id
    if isinstance(run_or_file, os.PathLike) or str(run_or_file).endswith(".json"):
        return AlignedPrompt.from_file(Path(run_or_file))
    run_store = RunStore(Path(store))
    try:
        return AlignedPrompt.from_run(run_store, str(run_or_file))
    finally:
        run_store.close()


def aligned_prompt(
    run_or_file: RunSource, store: str | os.PathLike[str] = DEFAULT_STORE
) -> Runnable[AlignedInput, PromptValue]:
    """A Runnable building the base model's prompt per input, byte for byte as the search did.

    Chat-mode runs give a ChatPromptValue (system + conversation), completion-mode runs a
    StringPromptValue (the raw text; stop at `COMPLETION_STOP`).
    """
    aligned = load_aligned(run_or_file, store)

    def build(value: AlignedInput) -> PromptValue:
        messages = _as_messages(value)
        index = _last_human(messages)
        built = aligned.build(str(messages[index].content))
        if built.mode == "completion":
            return StringPromptValue(text=built.text)
        return ChatPromptValue(messages=_conversation(built.system, built.user, messages, index))

    # A lambda, not a ChatPromptTemplate: templates would read braces in examples as variables.
    return RunnableLambda(build, name="drpo_aligned_prompt")


def _as_messages(value: AlignedInput) -> list[BaseMessage]:
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, Mapping):
        query = value.get("query", value.get("input"))
        if not isinstance(query, str):
            raise ValueError("an aligned prompt's dict input needs a 'query' (or 'input') string")
        return [HumanMessage(content=query)]
    messages = list(value)
    if not all(isinstance(m, BaseMessage) for m in messages):
        raise ValueError("an aligned prompt takes a string, a dict with 'query', or messages")
    return messages


def _last_human(messages: list[BaseMessage]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage) and isinstance(messages[index].content, str):
            return index
    raise ValueError("the conversation needs a human message: examples are retrieved for it")


def _conversation(
    system: str, user: str, messages: list[BaseMessage], index: int
) -> list[BaseMessage]:
    """The alignment system message, then the caller's turns with the query as searched."""
    client_system = [str(m.content) for m in messages if isinstance(m, SystemMessage)]
    if client_system:
        system += CLIENT_SYSTEM_MARKER + "\n\n".join(client_system)
    turns: list[BaseMessage] = [SystemMessage(content=system)]
    for position, message in enumerate(messages):
        if isinstance(message, SystemMessage):
            continue
        turns.append(HumanMessage(content=user) if position == index else message)
    return turns


class AlignedChat(Runnable[AlignedInput, BaseMessage]):
    """Any chat model behind a drpo aligned prompt: `aligned_prompt(run) | model` as one object.

    `run` is a run id (read from `store`), a RunResult, an exported prompt .json file or an
    AlignedPrompt.
    """

    def __init__(
        self,
        model: BaseChatModel | Runnable[Any, Any],
        run: RunSource,
        store: str | os.PathLike[str] = DEFAULT_STORE,
    ) -> None:
        self.aligned = load_aligned(run, store)
        self.model = model
        if self.aligned.mode == "completion" and isinstance(model, BaseChatModel):
            # The raw-text format must end where the search's requests ended.
            model = model.bind(stop=list(COMPLETION_STOP))
        self.chain: Runnable[AlignedInput, Any] = aligned_prompt(self.aligned) | model

    def invoke(
        self, input: AlignedInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Answer one query with the aligned prompt and the wrapped model."""
        return _message(self.chain.invoke(input, config, **kwargs))

    async def ainvoke(
        self, input: AlignedInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Answer one query with the aligned prompt and the wrapped model, asynchronously."""
        return _message(await self.chain.ainvoke(input, config, **kwargs))

    def stream(
        self, input: AlignedInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[BaseMessage]:
        """Stream the answer to one query in chunks."""
        yield from self.chain.stream(input, config, **kwargs)

    async def astream(
        self, input: AlignedInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[BaseMessage]:
        """Stream the answer to one query in chunks, asynchronously."""
        async for chunk in self.chain.astream(input, config, **kwargs):
            yield chunk


def _message(reply: Any) -> BaseMessage:
    # A completion-style model (an LLM, not a chat model) replies with text.
    return reply if isinstance(reply, BaseMessage | BaseMessageChunk) else AIMessage(content=reply)
