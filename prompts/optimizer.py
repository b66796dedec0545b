"""The optimizer's prompts: rewrite the system prompt (stage B) or an example answer (stage A)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drpo.prompts.template import PromptTemplate

PROMPT_MAX_CHARS = 2000
ANSWER_MAX_CHARS = 2000

REWRITE_PROMPT = PromptTemplate(
    name="rewrite_system_prompt",
    system=(
        "You improve the system prompt of an AI assistant. You see the current system prompt, "
        "a query, the assistant's answer under that prompt, and an expert's per-aspect "
        "critique. Write an improved system prompt that fixes the weaknesses the critique "
        "shows.\n\nGuidelines:\n"
        "- Keep it general: it must help with many queries, not only this one.\n"
        "- Format: an opening paragraph about who the assistant is, then bullet points.\n"
        "- Make sure it states the assistant's limitations (no internet or real-time data, no "
        "physical actions), that it refuses malicious requests with a reason, and that it "
        "sounds engaging rather than robotic.\n"
        "- Turn the critique into concrete dos and don'ts.\n"
        "- Add at most $max_new_bullets new bullets; merge related points rather than deleting "
        "them; keep at most $max_bullets bullets in total.\n"
        "Reply with JSON only: a short analysis of the critique, then the full new prompt."
    ),
    user=(
        "Current system prompt:\n<prompt>\n$prompt\n</prompt>\n\n"
        "Earlier versions (oldest first):\n$history\n\n"
        "Query:\n<query>\n$query\n</query>\n\n"
        "Answer:\n<answer>\n$answer\n</answer>\n\n"
        "Critique:\n$critique"
    ),
)

REWRITE_ANSWER = PromptTemplate(
    name="rewrite_example_answer",
    system=(
        "You are a demanding editor who improves example answers that will teach an AI "
        "assistant how to respond. Read the query, the current answer and a harsh critique, "
        "then write a better answer that fixes every weakness named: accurate, well "
        "structured, engaging, honest about limitations, and safe (a harmful request gets a "
        "reasoned refusal with a safe alternative). Keep it under about $max_words words.\n"
        "Reply with JSON only."
    ),
    user=(
        "Query:\n<query>\n$query\n</query>\n\n"
        "Current answer:\n<answer>\n$answer\n</answer>\n\n"
        "Critique:\n$critique"
    ),
)


class PromptProposal(BaseModel):
    """The optimizer's reply in stage B."""

    model_config = ConfigDict(extra="forbid", title="PromptProposal")
    analysis: str = Field(max_length=300)
    prompt: str = Field(min_length=10, max_length=PROMPT_MAX_CHARS)

    @field_validator("prompt")
    @classmethod
    def _tidy(cls, prompt: str) -> str:
        return tidy_prompt(prompt)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def _sentence_key(sentence: str) -> str:
    return " ".join(_BULLET.sub("", sentence).lower().split()).rstrip(".!?")


def tidy_prompt(prompt: str, max_chars: int = PROMPT_MAX_CHARS) -> str:
    """Drop repeated sentences and a sentence cut off by the length limit.

    Small optimizer models fall into loops ("You do not X. You do not X. ..."), which the
    schema's length limit then cuts mid-sentence; a repeated rule adds nothing to a system
    prompt and a half sentence only confuses the base model.
    """
    seen: set[str] = set()
    lines: list[str] = []
    for line in prompt.strip().splitlines():
        kept = []
        for sentence in _SENTENCE_END.split(line):
            key = _sentence_key(sentence)
            if not key:
                kept.append(sentence)
            elif key not in seen:
                seen.add(key)
                kept.append(sentence)
        if any(_sentence_key(s) for s in kept) or not line.strip():
            lines.append(" ".join(kept).rstrip() if kept else "")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if len(prompt.strip()) >= max_chars - 1 and text and text[-1] not in ".!?)\"'":
        # Cut off by the limit: end at the last complete sentence, if there is one.
        last_end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
        if last_end > len(text) // 3:
            text = text[: last_end + 1].rstrip()
    return text


class ExampleRewrite(BaseModel):
    """The optimizer's reply in stage A."""

    model_config = ConfigDict(extra="forbid", title="ExampleRewrite")
    answer: str = Field(min_length=1, max_length=ANSWER_MAX_CHARS)
