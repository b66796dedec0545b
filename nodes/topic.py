"""Catch a rewrite that is fitted to its training query: it names that query's topic.

A system prompt must help with any request. When the optimizer sees one query about roommates,
a weak model writes "give actionable steps for addressing roommate issues" into the prompt; the
reward on that query rises and the prompt is worse everywhere else. The rule here is lexical and
deterministic: the content words a proposal ADDS (absent from its parent prompt) that also occur
in a feedback query. A proposal that adds at least `MIN_TOPIC_WORDS` of a query's content words,
and at least `max_overlap` of them, is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# One shared word is normal for a general rule ("When writing Python code, ..."); it takes two
# to name a topic ("roommate issues", "sourdough starter").
MIN_TOPIC_WORDS: Final = 2

_WORD: Final = re.compile(r"[a-z][a-z'-]*[a-z]")

# Function words, and words any assistant prompt uses whatever the topic. A word block reads
# (and diffs) better than 150 one-word lines, hence the split.
_STOP_WORDS: Final = frozenset(
    """
    about above after again against also always among another answer answers anyone anything
    appropriate around asked asking assist assistant avoid away because been before being below
    best better between both can't cannot clear clearly could detail detailed details does doesn't
    doing don't during each either else enough ensure even every example examples explain
    explanation from further general give given gives giving good great have having help helpful
    helps here however information instead into it's just keep know like make making many might
    more most much must need needs never only other others otherwise over please possible provide
    provided provides providing question questions rather really request requests response
    responses right same should show since some someone something specific step steps still such
    sure tell than that their them then there these they thing things think this those though
    through tips together under until upon useful user user's users using very want ways well were
    what when where whether which while will with within without would you're your yours
    yourself
    """.split()  # noqa: SIM905
)


def content_words(text: str) -> set[str]:
    """Lower-case words of four letters or more that carry a topic, plural and possessive folded."""
    words: set[str] = set()
    for found in _WORD.findall(text.lower()):
        word = found.removesuffix("'s")
        if len(word) < 4 or word in _STOP_WORDS:
            continue
        if word.endswith("s") and not word.endswith("ss") and len(word) > 4:
            word = word[:-1]
        words.add(word)
    return words


@dataclass(frozen=True)
class TopicMatch:
    """The query a proposal is fitted to and the words it took from it."""

    query: str
    words: tuple[str, ...]
    share: float

    def reason(self) -> str:
        """Why the proposal was rejected, in words for the run store and the review."""
        return (
            f"names its training query's topic ({', '.join(self.words)}: "
            f"{self.share:.0%} of the query's content words)"
        )


def topic_match(
    proposal: str, parent: str, queries: Iterable[str], max_overlap: float
) -> TopicMatch | None:
    """The first query whose topic the proposal names, or None; `max_overlap` 1.0 turns it off."""
    if max_overlap >= 1.0:
        return None
    added = content_words(proposal) - content_words(parent)
    for query in queries:
        topic = content_words(query)
        taken = sorted(topic & added)
        if len(taken) >= MIN_TOPIC_WORDS and len(taken) >= max_overlap * len(topic):
            return TopicMatch(query=query, words=tuple(taken), share=len(taken) / len(topic))
    return None
