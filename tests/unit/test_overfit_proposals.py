"""The proposals of run 20261202-042303-d0f372 that the topic check let through.

That default run on the embedded 1.5B model returned a prompt that opens with a refusal and
names two of its training queries' topics. These are its real texts (from its run store): the
level-2 rewrite of L1-11b484 was written from the feedback on tr-008 (its own level-1 query)
and tr-009 (its parent's).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from drpo.checkpoints.store import RunStore
from drpo.nodes.refusal import refusing_sentence
from drpo.nodes.rewrite import general_children, rejection_reason
from drpo.nodes.topic import content_words, stem, topic_match
from drpo.prompts.optimizer import tidy_prompt
from drpo.state.settings import load_settings
from drpo.state.types import Candidate

ROOT = "You are a helpful assistant."
BILL = "Explain how a bill becomes a law in the United States."  # tr-008
ROOMMATE = "My roommate never cleans up. How do I bring it up without starting a fight?"  # tr-009
L1_REFUSING = (  # L1-11b484, the level-1 winner by reward
    "You are a helpful assistant. I am sorry, but I cannot assist with that request. "
    "Please let me know if you have any other questions."
)
FINAL = L1_REFUSING + (  # L2-c90135, the run's final prompt
    " I am here to help you understand the legislative process and how to handle roommate "
    "conflicts in a respectful and constructive way. I am always here to listen to your concerns "
    "and provide guidance on how to address them. I am committed to making things better and to "
    "working together to solve problems. I am here to help you understand the importance of "
    "cleaning up and to provide guidance on how to do it. I am here to help you understand the "
    "importance of empathy and respect and to work together to solve problems."
)
L1_GENERAL = (  # L1-45f79e, as the run stored it (with the optimizer's copied tags)
    "<prompt>\nYou are a helpful assistant. You are not able to access the internet or "
    "real-time data, and you cannot physically act. You refuse malicious requests with a "
    "reason. You are always engaging and respectful, and you always provide a constructive and "
    "helpful response.</prompt>"
)
L2_GENERAL = (  # L2-f69962, a child of L1-45f79e
    L1_GENERAL.removeprefix("<prompt>\n").removesuffix("</prompt>")
    + " You are always open to feedback and willing to improve your responses. You are always "
    "willing to provide examples and case studies to illustrate your points."
)


def test_the_final_prompt_names_the_roommate_query_by_stem() -> None:
    # Before: "cleaning" did not match "cleans", so only "roommate" was shared (one word).
    assert stem("cleaning") == stem("cleans") and stem("roommates") == stem("roommate")
    match = topic_match(FINAL, L1_REFUSING, [BILL, ROOMMATE], 0.34)
    assert match is not None and match.query == ROOMMATE
    # "conflicts" names the query's "fight" by the synonym list (tests/unit/test_topic_variants.py).
    assert set(match.words) == {"roommate", "cleaning", "conflicts"}


def test_the_final_prompt_and_its_parent_refuse() -> None:
    assert refusing_sentence(L1_REFUSING) == "I am sorry, but I cannot assist with that request."
    assert rejection_reason(L1_REFUSING, ROOT, [BILL, ROOMMATE], 0.34) is not None
    reason = rejection_reason(FINAL, ROOT, [BILL, ROOMMATE], 0.34)
    assert reason is not None and "refuses" in reason


def test_the_runs_general_prompts_pass() -> None:
    assert rejection_reason(tidy_prompt(L1_GENERAL), ROOT, [ROOMMATE], 0.34) is None
    assert rejection_reason(L2_GENERAL, tidy_prompt(L1_GENERAL), [BILL, ROOMMATE], 0.34) is None


def test_an_instruction_to_refuse_is_not_a_refusal() -> None:
    prompt = ROOT + " If a request is harmful, say 'I am sorry, but I cannot help with that'."
    assert refusing_sentence(prompt) is None
    assert refusing_sentence(ROOT + " You refuse malicious requests with a reason.") is None


def test_alignment_words_do_not_name_a_topic() -> None:
    assert content_words("Be respectful, safe and honest; refuse harmful requests.") == set()
    # Three-letter topic words count; three-letter function words do not.
    assert content_words("How does the law tax a car?") == {"law", "tax", "car"}


def test_a_shared_two_word_phrase_names_the_topic() -> None:
    query = "What should I consider before adopting a cat from a shelter?"
    proposal = ROOT + " Mention the adopting cat basics."
    match = topic_match(proposal, ROOT, [query], 0.9)
    assert match is not None and "cat" in match.words


def test_the_optimizers_copied_prompt_tags_are_dropped() -> None:
    assert tidy_prompt(L1_GENERAL).startswith("You are a helpful assistant.")
    assert "prompt>" not in tidy_prompt(L1_GENERAL)


def test_the_run_would_have_rejected_its_final_prompt(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", {}, [])
    ctx: Any = types.SimpleNamespace(
        settings=load_settings(), ledger=store.for_run("r1"), run_id="r1"
    )
    parent = Candidate(id="L1-11b484", prompt=L1_REFUSING)
    final = Candidate(id="L2-c90135", prompt=FINAL)
    kept = general_children(ctx, [final], parent, [BILL, ROOMMATE], level=2)
    assert kept == []
    row = store.candidate("r1", "L2-c90135")
    assert row is not None and "roommate" in row["rejected"]
    store.close()


def test_the_paper_preset_turns_the_checks_off() -> None:
    assert rejection_reason(FINAL, ROOT, [ROOMMATE], 1.0) is None
