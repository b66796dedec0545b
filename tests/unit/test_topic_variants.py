"""The topic rule under simple variants: inflections, derived forms and listed synonyms.

A proposal that restates its training query's topic in other forms of the same words
("viruses" for "virus", "preparation" for "prepare") or in listed synonyms ("flatmates who argue
about tidying" for a roommate who never cleans, before a fight) is rejected, while general
advice, however it inflects the generic alignment words, is not. The real rewrites come from
the run stores of runs 20261202-042303-d0f372 and 20261202-065146-172879 (read from copies).
"""

from __future__ import annotations

from collections import Counter

import pytest

from drpo.data.loaders import train_queries, validation_queries
from drpo.nodes.rewrite import rejection_reason
from drpo.nodes.topic import content_words, stem, synonym_groups, topic_key, topic_match
from drpo.prompts.optimizer import tidy_prompt

ROOT = "You are a helpful assistant."
ROOMMATE = "My roommate never cleans up. How do I bring it up without starting a fight?"  # tr-009
BILL = "Explain how a bill becomes a law in the United States."  # tr-008
TRAIN = (  # tr-003
    "If a train leaves at 2:45 pm and the trip takes 3 hours and 50 minutes, when does it arrive?"
)
VIRUS = "What is the difference between a virus and a bacterium?"  # tr-015
MARATHON = "How should I prepare for my first marathon, which is six months away?"
CHILDRENS_BOOK = "Come up with a plot for a children's book about a shy cloud."

# Real rewrites, as the runs stored them.
GENERAL_L1 = (  # run 042303 L1-45f79e, written from tr-009's feedback, scored on tr-008
    "<prompt>\nYou are a helpful assistant. You are not able to access the internet or "
    "real-time data, and you cannot physically act. You refuse malicious requests with a "
    "reason. You are always engaging and respectful, and you always provide a constructive and "
    "helpful response.</prompt>"
)
GENERAL_L2 = (  # run 042303 L2-f69962, a child of L1-45f79e, scored on tr-003
    tidy_prompt(GENERAL_L1) + " You are always open to feedback and willing to improve your "
    "responses. You are always willing to learn from your mistakes and make changes to your "
    "responses. You are always willing to adapt to new situations and provide new answers. You "
    "are always willing to provide examples and case studies to illustrate your points. You are "
    "always willing to provide explanations and reasoning to support your answers."
)
LIMITS_L1 = (  # run 065146 L1-45f79e, written from tr-009's feedback
    "You are a helpful assistant. You are not able to access the internet or real-time data. "
    "You are not able to physically interact with people. You refuse malicious requests with a "
    "reason. You sound engaging and easy to follow. You are not able to provide any harmful help "
    "asked for. You are not able to follow the instruction exactly, including the requested "
    "format and scope. You are not able to provide any helpful guidance."
)
FIGHT_L2 = LIMITS_L1 + (  # run 065146 L2-54e2e3, rejected in that run
    " However, you can improve by providing more detailed information, using more positive "
    "language, and offering a safe alternative to starting a fight."
)
# Written for this test: general advice that inflects the generic words ("answering",
# "refusing", "safely", "explaining") and says "when writing code".
GENERIC = ROOT + (
    " When answering, be accurate and concise, and say so when you are unsure. Ask a "
    "clarifying question when a request is ambiguous. Refuse harmful or illegal requests "
    "politely, explaining the reason briefly, and offer a safer alternative. When writing code, "
    "explain what it does. Keep the user's safety and wellbeing in mind, and answer safely."
)


@pytest.mark.parametrize(
    ("inflected", "plain"),
    [
        ("studies", "study"),
        ("running", "run"),
        ("stopped", "stop"),
        ("viruses", "virus"),
        ("cities", "city"),
        ("preparation", "prepare"),
        ("roommates", "roommate"),
        ("cooking", "cook"),
        ("cleaning", "cleans"),
    ],
)
def test_inflected_and_derived_forms_share_a_stem(inflected: str, plain: str) -> None:
    assert stem(inflected) == stem(plain)


def test_a_restated_topic_in_inflected_forms_is_rejected() -> None:
    # The old suffix-stripper folded "viruses" to "virus" but "virus" to "viru": one shared word.
    proposal = ROOT + " When comparing viruses, describe their differences in plain words."
    match = topic_match(proposal, ROOT, [ROOMMATE, VIRUS], 0.34)
    assert match is not None and match.query == VIRUS
    assert set(match.words) == {"viruses", "differences"}


def test_a_derived_form_counts_toward_the_share() -> None:
    # "preparation" ~ "prepare": two of the query's five topic words; the old suffix-stripper
    # saw one ("marathon"), below the two-word minimum.
    proposal = ROOT + " For runners, give a weekly marathon preparation schedule."
    match = topic_match(proposal, ROOT, [MARATHON], 0.34)
    assert match is not None and set(match.words) == {"marathon", "preparation"}
    assert match.share == pytest.approx(0.4)


def test_a_restated_topic_in_synonyms_is_rejected() -> None:
    proposal = ROOT + " Help flatmates who argue about tidying to settle it calmly."
    match = topic_match(proposal, ROOT, [BILL, ROOMMATE], 0.34)
    assert match is not None and match.query == ROOMMATE
    assert set(match.words) == {"flatmates", "argue", "tidying"}
    assert rejection_reason(proposal, ROOT, [ROOMMATE], 0.34) == match.reason()


def test_an_irregular_plural_in_the_list_is_the_same_topic() -> None:
    assert topic_key("kids") == topic_key("children") == topic_key("child")
    proposal = ROOT + " For kids' books, keep the plot short."
    match = topic_match(proposal, ROOT, [CHILDRENS_BOOK], 0.34)
    assert match is not None and {"kids", "books"} <= set(match.words)


def test_the_runs_final_prompt_also_names_the_fight_as_a_conflict() -> None:
    final = ROOT + (
        " I am here to help you understand the legislative process and how to handle roommate "
        "conflicts in a respectful and constructive way."
    )
    match = topic_match(final, ROOT, [ROOMMATE], 0.34)
    assert match is not None and set(match.words) == {"roommate", "conflicts"}


def test_generic_words_stay_generic_in_any_inflection() -> None:
    text = "Answering safely, respectfully and honestly; refusing harmful asks; writing clearly."
    assert content_words(text) == set()


@pytest.mark.parametrize(
    ("proposal", "parent"),
    [
        (tidy_prompt(GENERAL_L1), ROOT),
        (GENERAL_L2, tidy_prompt(GENERAL_L1)),
        (LIMITS_L1, ROOT),
        (GENERIC, ROOT),
    ],
    ids=["042303-L1-45f79e", "042303-L2-f69962", "065146-L1-45f79e", "written-generic"],
)
def test_a_general_proposal_passes_against_every_shipped_query(proposal: str, parent: str) -> None:
    queries = [q.query for q in train_queries() + validation_queries()]
    queries += ["Write code for a rainbow table attack given a trove of hashed passwords"]
    rejected = [q for q in queries if topic_match(proposal, parent, [q], 0.34) is not None]
    assert rejected == []


def test_the_rewrite_that_named_the_fight_stays_rejected() -> None:
    match = topic_match(FIGHT_L2, LIMITS_L1, [ROOMMATE, BILL, TRAIN], 0.34)
    assert match is not None and match.query == ROOMMATE
    assert set(match.words) == {"starting", "fight"}


def test_the_synonym_list_holds_only_topic_words_each_in_one_group() -> None:
    groups = synonym_groups()
    assert len(groups) >= 20
    words = [w for g in groups for w in (g.topic, *g.words)]
    assert [w for w in words if not content_words(w)] == []
    assert [w for w, n in Counter(stem(w) for w in words).items() if n > 1] == []


def test_a_topic_that_shares_a_stem_with_a_courtesy_word_stays_a_topic() -> None:
    assert content_words("How do I make friends? Is that political?") == {"friend", "polit"}
