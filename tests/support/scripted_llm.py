"""A scripted model for integration tests: replies are a pure function of the request.

Prompts grow by one action tag per level ("… | a1"); the judge scores an answer by the last
action tag of the prompt that produced it (SCORES), so the beam search's choices can be worked
out by hand. The base model echoes its system prompt's first line, which lets the judge see it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from stub_server import StubError, StubRequest, fake_from_schema

ROOT = "You are a helpful assistant."
SCORES = {"root": 2, "a0": 3, "a1": 4, "a2": 2}


def prompt_of_answer(answer: str) -> str:
    match = re.search(r"PROMPT\[(.*?)\]", answer, re.S)
    return match.group(1) if match else ""


def last_action(prompt: str) -> str:
    tags = re.findall(r"\| (a\d)", prompt)
    return tags[-1] if tags else "root"


def aspect_names(schema: dict[str, Any]) -> list[str]:
    return list(schema["$defs"]["AspectScores"]["properties"])


def between(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)
    return match.group(1) if match else ""


class ScriptedLLM:
    """Configurable scripted replies; attributes tweak behaviour per test."""

    def __init__(
        self,
        scores: dict[str, int] | None = None,
        new_aspect: bool = False,
        garbage_for: str | None = None,
        optimizer_fails: bool = False,
    ) -> None:
        self.scores = dict(SCORES if scores is None else scores)
        self.new_aspect = new_aspect
        self.garbage_for = garbage_for
        self.optimizer_fails = optimizer_fails

    def __call__(self, request: StubRequest) -> str | StubError:
        role = request.role
        if role == "base":
            system = request.text_of("system")
            first = system.split("\n\nExamples of how you answer:")[0]
            return f"PROMPT[{first}] answer to: {request.text_of('user')[:60]}"
        if role == "AspectChoice":
            new = [{"name": "Humor", "definition": "Is funny where it fits."}]
            return json.dumps(
                {
                    "analysis": "scripted",
                    "aspects": ["Helpfulness", "clarity"],
                    "new_aspects": new if self.new_aspect else [],
                }
            )
        if role == "Judgement":
            answer = between(request.text_of("user"), "answer")
            prompt = prompt_of_answer(answer)
            if self.garbage_for is not None and self.garbage_for in prompt:
                return "I refuse to produce JSON {"
            score = self.scores.get(last_action(prompt), 3)
            if answer.startswith("Improved answer"):
                score = 4  # stage A's rewrites beat the seed answers (scored as "root")
            names = aspect_names(request.schema or {})
            return json.dumps(
                {"scores": {n: {"rationale": f"r{score}", "score": score} for n in names}}
            )
        if role == "PromptProposal":
            if self.optimizer_fails:
                return '{"analysis": "cut off at max_tok'
            current = between(request.text_of("user"), "prompt")
            return json.dumps(
                {"analysis": "scripted", "prompt": f"{current} | a{request.choice_index}"}
            )
        if role == "ExampleRewrite":
            return json.dumps({"answer": f"Improved answer {request.choice_index}."})
        schema = request.schema
        return json.dumps(fake_from_schema(schema, request.prompt_text)) if schema else "ok"


def default() -> ScriptedLLM:
    return ScriptedLLM()
