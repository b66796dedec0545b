"""Catch a rewrite that is fitted to its training query: it names that query's topic.

A system prompt must help with any request. When the optimizer sees one query about roommates,
a weak model writes "give actionable steps for addressing roommate issues" into the prompt; the
reward on that query rises and the prompt is worse everywhere else. The rule here is lexical and
deterministic: the content words a proposal ADDS (absent from its parent prompt) that also occur
in a feedback query, compared by stem ("cleaning" names a query about who "cleans up"). A
proposal is rejected when it adds at least `MIN_TOPIC_WORDS` of a query's content words, and at
least `max_overlap` of them, or repeats one of the query's two-word phrases.

Words any alignment prompt uses whatever the topic ("safe", "respectful", "real-time") never
count. A synonym is beyond a lexical rule: "the legislative process" for "how a bill becomes a
law" shares no word with the query, which is why the whole rewrite is also checked for the
other topics it names (see `tests/unit/test_generalising_proposals.py` for the run it missed).
"""

from __future__ import annotations

import itertools
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

# Three-letter words name topics too ("law", "cat", "tax"); these are the ones that do not.
_SHORT_STOP_WORDS: Final = frozenset(
    """
    all and any are ask but can did for get got had has her him his how its let may new not now
    off one our out own put say see she the too try two use via was way who why yes yet you
    """.split()  # noqa: SIM905
)

# What every alignment prompt says, whatever the query: a rewrite may add these freely.
_ALIGNMENT_WORDS: Final = frozenset(
    """
    accurate accuracy act action actions advice ai assistance assistant behaviour behavior bias
    careful caveat concise constructive courteous dangerous data decline empathetic empathy
    engaging ethical ethics factual feedback friendly guidance guideline guidelines harm harmful
    harmless honest honesty illegal internet kind language legal limitation limitations
    malicious medical model offensive physical physically polite professional reason reasons
    refuse refusal respect respectful safe safety sensitive support supportive transparent
    unsafe
    """.split()  # noqa: SIM905
)


def stem(word: str) -> str:
    """A word folded to a crude stem: plural, "-ing", "-ed" and a final "e" dropped.

    Enough to match "cleaning" with "cleans" and "roommates" with "roommate"; both sides are
    folded the same way, so a stem need not be an English word.
    """
    word = word.removesuffix("'s").removesuffix("’s")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word.removesuffix("e") if len(word) > 3 else word


def _is_content(word: str) -> bool:
    if len(word) < 3 or word in _ALIGNMENT_WORDS:
        return False
    return word not in (_SHORT_STOP_WORDS if len(word) == 3 else _STOP_WORDS)


def content_tokens(text: str) -> list[tuple[str, str]]:
    """The text's topic-carrying words in order, each as (stem, word as written)."""
    words = (w.removesuffix("'s") for w in _WORD.findall(text.lower()))
    return [(stem(w), w) for w in words if _is_content(w)]


def content_words(text: str) -> set[str]:
    """The stems of the words that carry a topic: function and alignment words left out."""
    return {s for s, _ in content_tokens(text)}


def content_bigrams(text: str) -> set[tuple[str, str]]:
    """Adjacent content-word stems: a two-word phrase such as ("roommate", "conflict")."""
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
    written = {s: w for s, w in reversed(tokens)}  # each stem as the proposal first wrote it
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
