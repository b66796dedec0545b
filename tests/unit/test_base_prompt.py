"""Tests for the one function that formats the base model's prompt in chat and completion mode."""

from __future__ import annotations

from drpo.prompts.base import (
    ANSWER_MARK,
    COMPLETION_HEADER,
    COMPLETION_STOP,
    END_MARK,
    QUERY_MARK,
    format_base_prompt,
)
from drpo.state.types import Example

PROMPT = "You are a careful assistant.\n\n- Be honest."
EXAMPLES = [
    Example(id="e1", query="What is 2+2?", answer="4."),
    Example(id="e2", query="Name a colour.", answer="Blue."),
]
QUERY = "How do tides work?"


def test_chat_system_holds_prompt_then_examples_and_user_holds_query() -> None:
    built = format_base_prompt(PROMPT, EXAMPLES, QUERY, mode="chat")
    assert built.mode == "chat"
    assert built.user == QUERY
    assert built.text == ""
    assert built.system.startswith(PROMPT)
    first = built.system.index("What is 2+2?")
    second = built.system.index("Name a colour.")
    assert len(PROMPT) <= first < built.system.index("4.", first) < second
    assert built.system.index("Blue.") > second
    assert QUERY not in built.system


def test_chat_examples_use_query_and_answer_blocks() -> None:
    built = format_base_prompt(PROMPT, EXAMPLES[:1], QUERY, mode="chat")
    assert f"{QUERY_MARK}\nWhat is 2+2?\n\n{ANSWER_MARK}\n4.\n{END_MARK}" in built.system


def test_chat_has_no_stop_sequences() -> None:
    assert format_base_prompt(PROMPT, EXAMPLES, QUERY, mode="chat").stop == ()


def test_chat_without_examples_is_just_the_prompt() -> None:
    built = format_base_prompt(f"  {PROMPT}\n", [], QUERY, mode="chat")
    assert built.system == PROMPT
    assert "Examples" not in built.system
    assert QUERY_MARK not in built.system


def test_chat_is_the_default_mode() -> None:
    assert format_base_prompt(PROMPT, EXAMPLES, QUERY).mode == "chat"


def test_completion_layout() -> None:
    built = format_base_prompt(PROMPT, EXAMPLES, QUERY, mode="completion")
    assert built.mode == "completion"
    assert built.system == ""
    assert built.user == ""
    text = built.text
    assert text.startswith(COMPLETION_HEADER)
    assert PROMPT in text
    assert text.index(COMPLETION_HEADER) < text.index(PROMPT) < text.index("What is 2+2?")
    assert text.index("What is 2+2?") < text.index("Name a colour.") < text.index(QUERY)
    # One query block per example plus the live query; one closed answer per example.
    assert text.count(QUERY_MARK) == len(EXAMPLES) + 1
    assert text.count(ANSWER_MARK) == len(EXAMPLES) + 1
    assert text.count(END_MARK) == len(EXAMPLES)


def test_completion_ends_with_open_answer_for_the_live_query() -> None:
    text = format_base_prompt(PROMPT, EXAMPLES, f"  {QUERY}  ", mode="completion").text
    assert text.endswith(f"{QUERY_MARK}\n{QUERY}\n\n{ANSWER_MARK}\n")


def test_completion_example_block_format() -> None:
    example = Example(id="e", query="  Why?  ", answer="\nBecause.\n")
    text = format_base_prompt(PROMPT, [example], QUERY, mode="completion").text
    assert f"{QUERY_MARK}\nWhy?\n\n{ANSWER_MARK}\nBecause.\n{END_MARK}" in text


def test_completion_stop_sequences_stop_at_the_end_of_answer() -> None:
    built = format_base_prompt(PROMPT, EXAMPLES, QUERY, mode="completion")
    assert built.stop == COMPLETION_STOP
    assert END_MARK in built.stop
    assert any(QUERY_MARK in stop for stop in built.stop)


def test_completion_without_examples_has_no_example_blocks() -> None:
    text = format_base_prompt(PROMPT, [], QUERY, mode="completion").text
    assert text.count(QUERY_MARK) == 1
    assert END_MARK not in text
    assert text == (
        f"{COMPLETION_HEADER}\n\n# Instructions\n\n{PROMPT}\n\n{QUERY_MARK}\n{QUERY}\n\n"
        f"{ANSWER_MARK}\n"
    )


def test_identical_inputs_give_byte_identical_output() -> None:
    for mode in ("chat", "completion"):
        first = format_base_prompt(PROMPT, list(EXAMPLES), QUERY, mode=mode)
        second = format_base_prompt(PROMPT, tuple(EXAMPLES), QUERY, mode=mode)
        assert first == second
        assert first.rendered().encode() == second.rendered().encode()


def test_example_order_matters() -> None:
    forward = format_base_prompt(PROMPT, EXAMPLES, QUERY, mode="completion")
    backward = format_base_prompt(PROMPT, EXAMPLES[::-1], QUERY, mode="completion")
    assert forward.text != backward.text


def test_rendered_chat_shows_both_messages() -> None:
    rendered = format_base_prompt(PROMPT, [], QUERY, mode="chat").rendered()
    assert rendered == f"[system]\n{PROMPT}\n[user]\n{QUERY}"
