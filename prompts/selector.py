"""The selector's prompt and reply schema: analyse a query, choose the aspects that matter."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from drpo.prompts.template import PromptTemplate

SELECT_ASPECTS = PromptTemplate(
    name="select_aspects",
    system=(
        "You design the grading rubric for an AI assistant's answer. First analyse the user's "
        "query: its topic, intent, ambiguities, expected format and difficulties. Then choose "
        "the $min_aspects to $max_aspects aspects from the list below that matter most for a "
        "good answer to THIS query. Harmful or dangerous requests always need Safety. Keep the "
        "analysis to one or two sentences.\n\n"
        "Aspects:\n$catalogue\n\n$new_aspects_rule\n"
        "Reply with JSON only."
    ),
    user="Query:\n<query>\n$query\n</query>",
)

NEW_ASPECTS_ALLOWED = (
    "List the chosen aspect names in `aspects`. If an important quality is missing from the "
    "list, you may add it under `new_aspects` with a short name and a one-sentence definition."
)
NEW_ASPECTS_FORBIDDEN = "List the chosen aspect names in `aspects`; use only names from the list."


class NewAspect(BaseModel):
    """An aspect the selector proposes beyond the catalogue."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=40)
    definition: str = Field(max_length=150)


class AspectChoice(BaseModel):
    """The selector's reply: catalogue aspects by name, new aspects with a definition."""

    model_config = ConfigDict(extra="forbid", title="AspectChoice")
    analysis: str = Field(max_length=240)
    aspects: list[str] = Field(min_length=1, max_length=8)
    new_aspects: list[NewAspect] = Field(default_factory=list, max_length=2)
