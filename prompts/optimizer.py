"""The optimizer's prompts: rewrite the system prompt (stage B) or an example answer (stage A)."""

from __future__ import annotations

import difflib
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drpo.prompts.template import PromptTemplate

PROMPT_MAX_CHARS = 2000
ANSWER_MAX_CHARS = 2000

REWRITE_PROMPT = PromptTemplate(
    name="rewrite_system_prompt",
    system=(
        "You improve the system prompt of an AI assistant. You see the current system prompt "
        "and one or more cases: a query, the assistant's answer, and an expert's per-aspect "
        "critique, weakest answer first. Write an improved system prompt that fixes the "
        "weaknesses the critiques show, above all those that recur across cases.\n\n"
        "Guidelines:\n"
        "- Keep it general: it must help with any query, not only these. Never mention a "
        "case's subject (its people, objects or domain); state the rule behind the fix.\n"
        "- Format: an opening paragraph about who the assistant is, then bullet points.\n"
        "- Make sure it states the assistant's limitations (no internet or real-time data, no "
        "physical actions), that it refuses malicious requests with a reason, and that it "
        "sounds engaging rather than robotic.\n"
        "- Turn the critiques into concrete dos and don'ts; never repeat a rule in other words.\n"
        "- Add at most $max_new_bullets new bullets; merge related points rather than deleting "
        "them; keep at most $max_bullets bullets in total.\n"
        "Reply with JSON only: a short analysis of the critiques, then the full new prompt."
    ),
    user=(
        "Current system prompt:\n<prompt>\n$prompt\n</prompt>\n\n"
        "Earlier versions (oldest first):\n$history\n\n"
        "$cases"
    ),
)

REWRITE_CASE = PromptTemplate(
    name="rewrite_case",
    system="",
    user=(
        "Case $number:\nQuery:\n<query>\n$query\n</query>\n\n"
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
# The rewrite request shows the current prompt inside <prompt> tags, and a small optimizer
# copies them into its reply (run 20261202-042303-d0f372 sent "<prompt>" to the base model).
_PROMPT_TAGS = re.compile(r"^\s*<prompt>\s*|\s*</prompt>\s*$", re.IGNORECASE)


def _sentence_key(sentence: str) -> str:
    return " ".join(_BULLET.sub("", sentence).lower().split()).rstrip(".!?")


# Two sentences say the same thing when their characters mostly match (difflib ratio, which
# catches an added or changed word) or their words mostly match (Jaccard, which catches the same
# words reordered). Calibrated on optimizer loops: "Keep answers short and clear." vs "Keep
# answers clear." is 0.78 by ratio; "Always be polite and respectful." vs "Always be respectful
# and polite to users." 0.71 by words; distinct rules such as "Be concise." vs "Be precise."
# (0.70, 0.33) or "You are not allowed to share personal information." vs "... give medical
# advice." (0.66, 0.45) stay below both.
NEAR_DUPLICATE_RATIO = 0.75
NEAR_DUPLICATE_WORDS = 0.7


def near_duplicate(key: str, seen: list[str]) -> bool:
    """Whether a sentence (normalised) repeats one already kept, word for word or nearly."""
    words = set(key.split())
    for other in seen:
        other_words = set(other.split())
        if len(words & other_words) >= NEAR_DUPLICATE_WORDS * len(words | other_words):
            return True
        matcher = difflib.SequenceMatcher(None, key, other, autojunk=False)
        # quick_ratio bounds ratio from above and is cheap: most pairs stop there.
        if (
            matcher.quick_ratio() >= NEAR_DUPLICATE_RATIO
            and matcher.ratio() >= NEAR_DUPLICATE_RATIO
        ):
            return True
    return False


def tidy_prompt(prompt: str, max_chars: int = PROMPT_MAX_CHARS) -> str:
    """Drop repeated and near-repeated sentences, and a sentence cut off by the length limit.

    Small optimizer models fall into loops ("You do not X. You do not X. ..."), often with a
    word changed each time, which the schema's length limit then cuts mid-sentence; a repeated
    rule adds nothing to a system prompt and a half sentence only confuses the base model.
    """
    prompt = _PROMPT_TAGS.sub("", prompt)
    seen: list[str] = []
    lines: list[str] = []
    looped = False
    for line in prompt.strip().splitlines():
        kept = []
        for sentence in _SENTENCE_END.split(line):
            key = _sentence_key(sentence)
            if not key:
                kept.append(sentence)
            elif not near_duplicate(key, seen):
                seen.append(key)
                kept.append(sentence)
            else:
                looped = True
        if any(_sentence_key(s) for s in kept) or not line.strip():
            lines.append(" ".join(kept).rstrip() if kept else "")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    cut_off = len(prompt.strip()) >= max_chars - 1 or looped
    if cut_off and text and text[-1] not in ".!?)\"'":
        # Cut off by the limit (the schema's, or the reply's tokens, which a loop reaches well
        # before the schema's: "… malicious requests. You" was a final prompt): end at the last
        # complete sentence, if there is one.
        last_end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
        if last_end > len(text) // 3:
            text = text[: last_end + 1].rstrip()
    return text


class ExampleRewrite(BaseModel):
    """The optimizer's reply in stage A."""

    model_config = ConfigDict(extra="forbid", title="ExampleRewrite")
    answer: str = Field(min_length=1, max_length=ANSWER_MAX_CHARS)
