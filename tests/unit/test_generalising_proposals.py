"""Tests for proposals that generalise: several answers as feedback, near-duplicate sentences
dropped, and rewrites that name their training query's topic rejected and recorded."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

from drpo.checkpoints.store import RunStore
from drpo.nodes.beam import recent_feedback
from drpo.nodes.rewrite import general_children, render_cases
from drpo.nodes.topic import content_words, topic_match
from drpo.prompts.optimizer import near_duplicate, tidy_prompt
from drpo.state.settings import load_settings
from drpo.state.types import AspectScore, Candidate, Feedback, Judgement, LevelScore

PARENT = "You are a helpful assistant."
ROOMMATE = "How do I deal with my roommate's issues about cleaning the kitchen?"


def _feedback(query: str, score: int = 3) -> Feedback:
    judgement = Judgement(scores=(AspectScore(aspect="Helpfulness", score=score, rationale="ok"),))
    return Feedback(query=query, answer=f"answer to {query}", judgement=judgement)


def _score(candidate_id: str, query: str, reward: float) -> LevelScore:
    return LevelScore(
        candidate_id=candidate_id,
        query_id=query,
        answer_id=f"{candidate_id}:{query}",
        reward=reward,
        feedback=_feedback(query, int(reward)),
    )


# near-duplicate sentences


def test_a_reworded_repeat_is_dropped() -> None:
    prompt = (
        "You are a helpful assistant.\n"
        "- Always be polite and respectful.\n"
        "- Always be respectful and polite to users.\n"
        "- You do not provide legal advice.\n"
        "- You do not provide legal advice to anyone."
    )
    assert tidy_prompt(prompt) == (
        "You are a helpful assistant.\n"
        "- Always be polite and respectful.\n"
        "- You do not provide legal advice."
    )


def test_a_loop_with_one_word_changed_each_time_collapses() -> None:
    # The 1.5B optimizer's loop in docs/results/eval-20261127-220437-1d6632.md (2,001 chars);
    # exact-repeat removal kept four variants of the looped sentence.
    looped = "You are not able to provide a solution that involves {}."
    variants = ["physical actions", "negative language", "positive language"]
    variants += ["using positive language"] * 5
    prompt = "You are a helpful assistant. " + " ".join(looped.format(v) for v in variants)
    assert tidy_prompt(prompt) == "You are a helpful assistant. " + looped.format(variants[0])


def test_distinct_rules_with_the_same_opening_are_kept() -> None:
    prompt = (
        "You are not allowed to share personal information. "
        "You are not allowed to give medical advice. Be concise. Be precise."
    )
    assert tidy_prompt(prompt) == prompt


def test_near_duplicate_compares_against_every_kept_sentence() -> None:
    seen = ["be concise", "keep answers short and clear"]
    assert near_duplicate("keep answers clear", seen)
    assert not near_duplicate("cite your sources", seen)


# several answers as feedback


def test_the_optimizer_sees_this_levels_answers_then_the_parents() -> None:
    child = Candidate(id="L2-a", prompt="P", parent_id="L1-p", path_rewards=(4.0, 3.0))
    scores = [_score("L2-a", "q-good", 4.0), _score("L2-a", "q-bad", 2.0), _score("x", "q", 1.0)]
    earlier = {"L1-p": [_feedback("q-old"), _feedback("q-good")]}
    cases = recent_feedback(scores, child, earlier, keep=3)
    # Weakest first, then the parent's, each query once.
    assert [c.query for c in cases] == ["q-bad", "q-good", "q-old"]
    assert [c.query for c in recent_feedback(scores, child, earlier, keep=2)] == ["q-bad", "q-good"]


def test_one_query_per_level_still_gives_the_optimizer_more_than_one_query() -> None:
    child = Candidate(id="L3-a", prompt="P", parent_id="L2-a")
    earlier = {"L2-a": [_feedback("q-level-2"), _feedback("q-level-1")]}
    cases = recent_feedback([_score("L3-a", "q-level-3", 3.0)], child, earlier, keep=3)
    assert len(cases) == 3


def test_every_case_reaches_the_optimizer() -> None:
    text = render_cases([_feedback("first query"), _feedback("second query")])
    assert "Case 1:" in text and "Case 2:" in text
    assert text.index("first query") < text.index("second query")


# a rewrite that names its query's topic


def test_content_words_leave_out_function_and_assistant_words() -> None:
    assert content_words("Please provide helpful, safe steps about the kitchens") == {"kitchen"}


def test_a_rewrite_naming_the_query_topic_is_caught() -> None:
    proposal = PARENT + " Give actionable steps for addressing roommate issues and cleaning."
    match = topic_match(proposal, PARENT, ["Reverse a list in Python.", ROOMMATE], 0.34)
    assert match is not None and match.query == ROOMMATE
    assert set(match.words) == {"roommate", "issues", "cleaning"}
    assert "roommate" in match.reason()


def test_a_general_rewrite_passes() -> None:
    proposal = PARENT + " Say when you lack real-time data. When writing Python code, add comments."
    assert topic_match(proposal, PARENT, [ROOMMATE, "Reverse a list in Python."], 0.34) is None


def test_topic_words_already_in_the_parent_do_not_count() -> None:
    parent = PARENT + " Help with roommate issues."
    proposal = parent + " Be brief."
    assert topic_match(proposal, parent, [ROOMMATE], 0.34) is None


def test_an_overlap_of_one_turns_the_check_off() -> None:
    proposal = PARENT + " Address roommate issues and kitchen cleaning."
    assert topic_match(proposal, PARENT, [ROOMMATE], 1.0) is None


def test_rejected_rewrites_are_recorded_with_their_reason(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", {}, [])
    ctx: Any = types.SimpleNamespace(
        settings=load_settings(), ledger=store.for_run("r1"), run_id="r1"
    )
    parent = Candidate(id="L0-root", prompt=PARENT)
    fitted = Candidate(id="L1-fit", prompt=PARENT + " Solve roommate issues about cleaning.")
    general = Candidate(id="L1-gen", prompt=PARENT + " Admit what you do not know.")
    kept = general_children(ctx, [fitted, general], parent, [ROOMMATE], level=1)
    assert [c.id for c in kept] == ["L1-gen"]
    row = store.candidate("r1", "L1-fit")
    assert row is not None and "roommate" in row["rejected"] and row["survived"] == 0
    assert store.candidate("r1", "L1-gen") is None
    store.close()


class CapturingOptimizer:
    """The optimizer role: records what it was shown and proposes the given prompts."""

    def __init__(self, prompts: list[str]) -> None:
        self.prompts = prompts
        self.users: list[str] = []

    async def structured(self, system: str, user: str, schema: Any, **_: Any) -> list[Any]:
        self.users.append(user)
        return [schema(analysis="a", prompt=p) for p in self.prompts]


def test_the_rewrite_node_shows_every_case_and_drops_a_topic_fitted_proposal(
    tmp_path: Path,
) -> None:
    from drpo.nodes.rewrite import _rewrite

    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", {}, [])
    optimizer = CapturingOptimizer(
        [PARENT + " Fix roommate issues about kitchen cleaning.", PARENT + " Admit doubt."]
    )
    ctx: Any = types.SimpleNamespace(
        settings=load_settings(),
        ledger=store.for_run("r1"),
        run_id="r1",
        models={"optimizer": optimizer},
    )
    cases = [_feedback(ROOMMATE, 2), _feedback("What is the capital of Peru?", 3)]
    task: Any = {
        "candidate": Candidate(id="L1-p", prompt=PARENT, path_rewards=(3.0,)),
        "last_feedback": cases[0],
        "level": 2,
        "feedback_cases": cases,
    }
    result = asyncio.run(_rewrite(task, ctx))
    (user,) = optimizer.users
    assert "Case 1:" in user and ROOMMATE in user and "capital of Peru" in user
    (proposal,) = result["proposals"]
    assert proposal.candidate.prompt.endswith("Admit doubt.")
    rejected = [r for r in store.db["candidates"].rows if r["rejected"]]
    assert len(rejected) == 1 and "roommate" in rejected[0]["rejected"]
    store.close()


def test_a_loop_cut_off_before_the_schema_limit_loses_its_half_sentence() -> None:
    # The 1.5B optimizer's reply in run 20261202-131347-415b9b: the loop ran into the reply's
    # token limit at 1,500 characters, and "… malicious requests. You" became the final prompt.
    rules = (
        "You are not allowed to use any harmful or illegal information. "
        "You are not allowed to use any real-time data or internet. "
        "You are not allowed to use any physical actions. "
        "You are not allowed to use any malicious requests. "
    )
    prompt = "You are a helpful assistant. " + rules * 6 + "You"
    assert len(prompt) < 2000
    tidied = tidy_prompt(prompt)
    assert tidied == tidy_prompt(prompt.removesuffix("You"))
    assert tidied.endswith("malicious requests.")


def test_a_last_sentence_without_a_full_stop_stays_when_nothing_was_cut() -> None:
    prompt = "You are a helpful assistant. Answer briefly"
    assert tidy_prompt(prompt) == prompt
