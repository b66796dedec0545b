"""Catch a rewrite that is fitted to its training query: it names that query's topic.

A system prompt must help with any request. When the optimizer sees one query about roommates,
a weak model writes "give actionable steps for addressing roommate issues" into the prompt; the
reward on that query rises and the prompt is worse everywhere else. The rule here is lexical and
deterministic: the content words a proposal ADDS (absent from its parent prompt) that also occur
in a feedback query. Words are compared as topics: each is reduced to its Snowball (Porter2)
stem, so "roommates", "cleaning" and "studies" match "roommate", "cleans" and "study", and the
stem then goes through the shipped synonym list (`data/topic_synonyms.jsonl`), so "flatmate"
names a query about a "roommate" and "children" one about a "kid". A proposal is rejected when
it adds at least `MIN_TOPIC_WORDS` of a query's topic words, and at least `max_overlap` of them,
or repeats one of the query's two-word phrases.

Words any alignment prompt uses whatever the topic ("safe", "respectful", "refusing") never
count, in any inflection. A synonym the list does not hold stays beyond this rule: "the
legislative process" for "how a bill becomes a law" shares only "law" (by the list) with the
query, one word; the whole rewrite is also checked for the other topics it names.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Final

import snowballstemmer
from pydantic import BaseModel, ValidationError

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

# Three-letter words name topics too ("law", "cat", "tax"); these are the ones that do not.
_SHORT_STOP_WORDS: Final = frozenset(
    """
    all and any are ask but can did for get got had has her him his how its let may new not now
    off one our out own put say see she the too try two use via was way who why yes yet you
    """.split()  # noqa: SIM905
)

# Verbs that say what form the answer takes, not what it is about: "When writing code" is
# general advice even for a query that asks to "Write code for ..." (stems cover "writing").
_TASK_VERBS: Final = frozenset({"write", "describe", "summarize", "summarise", "compose"})

# What every alignment prompt says, whatever the query: a rewrite may add these freely, in any
# inflection. Left out because their stem is a topic's: "friendly" (friends), "polite"
# (political), "constructive" (constructing), "careful" (care), "medical" (medications).
_ALIGNMENT_WORDS: Final = frozenset(
    """
    accurate accuracy act action actions advice ai assistance assistant behaviour behavior bias
    caveat concise courteous dangerous data decline empathetic empathy engaging ethical ethics
    factual feedback guidance guideline guidelines harm harmful harmless honest honesty illegal
    internet kind language legal limitation limitations malicious model offensive professional
    reason reasons refuse refusal respect respectful safe safety sensitive support supportive
    transparent unsafe
    """.split()  # noqa: SIM905
)


SYNONYMS_FILE: Final = "topic_synonyms.jsonl"

_ENGLISH: Final = snowballstemmer.stemmer("english")
# A Snowball stemmer keeps the word it works on in the object: rewrites are checked from
# concurrent tasks, so one call at a time.
_ENGLISH_LOCK: Final = threading.Lock()


@functools.lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """The word's Snowball (Porter2) English stem, possessive dropped: "studies" -> "studi".

    Both sides are folded the same way, so a stem need not be an English word.
    """
    with _ENGLISH_LOCK:
        return str(_ENGLISH.stemWord(word.removesuffix("'s").removesuffix("’s")))


class SynonymGroup(BaseModel):
    """One line of the synonym list: words that name the same topic as `topic`."""

    topic: str
    words: list[str]


@functools.cache
def synonym_groups() -> tuple[SynonymGroup, ...]:
    """The shipped synonym list (`data/topic_synonyms.jsonl`), one group per line."""
    text = resources.files("drpo.data").joinpath(SYNONYMS_FILE).read_text(encoding="utf-8")
    groups = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                groups.append(SynonymGroup.model_validate(json.loads(line)))
            except (ValueError, ValidationError) as exc:  # a packaging bug, not user input
                raise RuntimeError(f"{SYNONYMS_FILE} line {number}: {exc}") from None
    return tuple(groups)


@functools.cache
def synonym_topics() -> dict[str, str]:
    """Each listed word's stem mapped to its group's topic stem."""
    return {stem(word): stem(g.topic) for g in synonym_groups() for word in g.words}


def topic_key(word: str) -> str:
    """What the word names, for comparison: its stem, or its synonym group's topic stem."""
    stemmed = stem(word)
    return synonym_topics().get(stemmed, stemmed)


@functools.cache
def _generic_stems() -> frozenset[str]:
    words = _ALIGNMENT_WORDS | _TASK_VERBS | _STOP_WORDS | _SHORT_STOP_WORDS
    return frozenset(stem(w) for w in words)


def _is_content(word: str) -> bool:
    # Matched by stem, so that "safely", "refusing" and "answering" stay generic like "safe",
    # "refuse" and "answer".
    return len(word) >= 3 and stem(word) not in _generic_stems()


def content_tokens(text: str) -> list[tuple[str, str]]:
    """The text's topic-carrying words in order, each as (topic key, word as written)."""
    words = (w.removesuffix("'s") for w in _WORD.findall(text.lower()))
    return [(topic_key(w), w) for w in words if _is_content(w)]


def content_words(text: str) -> set[str]:
    """The topic keys of the words that carry a topic: function and alignment words left out."""
    return {s for s, _ in content_tokens(text)}


def content_bigrams(text: str) -> set[tuple[str, str]]:
    """Adjacent content-word topic keys: a two-word phrase such as ("roommat", "fight")."""
    stems = [s for s, _ in content_tokens(text)]
    return set(itertools.pairwise(stems))


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
    tokens = content_tokens(proposal)
    written = {s: w for s, w in reversed(tokens)}  # each key as the proposal first wrote it
    added = {s for s, _ in tokens} - content_words(parent)
    new_phrases = content_bigrams(proposal) - content_bigrams(parent)
    for query in queries:
        topic = content_words(query)
        if not topic:
            continue
        taken = sorted(topic & added)
        phrase = new_phrases & content_bigrams(query)
        enough = len(taken) >= MIN_TOPIC_WORDS and len(taken) >= max_overlap * len(topic)
        if enough or phrase:
            shown = tuple(written[s] for s in sorted(set(taken) | {s for p in phrase for s in p}))
            return TopicMatch(query=query, words=shown, share=len(taken) / len(topic))
    return None
