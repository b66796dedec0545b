"""Tests for the state reducers: appending per-level lists, merging mappings, and `Reset`."""

from __future__ import annotations

from typing import Any

import pytest

from drpo.state.graph_state import Reset, accumulate, merge_by_key


def test_accumulate_appends_to_current() -> None:
    assert accumulate([1, 2], [3]) == [1, 2, 3]


def test_accumulate_starts_from_none() -> None:
    assert accumulate(None, [1]) == [1]


def test_accumulate_with_no_update_keeps_current() -> None:
    assert accumulate([1, 2], None) == [1, 2]
    assert accumulate([1, 2], []) == [1, 2]
    assert accumulate(None, None) == []


def test_accumulate_does_not_mutate_inputs() -> None:
    current, update = [1], [2]
    result = accumulate(current, update)
    assert result == [1, 2]
    assert current == [1]
    assert update == [2]
    assert result is not current


def test_reset_alone_empties_the_list() -> None:
    assert accumulate([1, 2, 3], Reset()) == []
    assert accumulate(None, Reset()) == []


def test_list_starting_with_reset_replaces_the_list() -> None:
    assert accumulate([1, 2, 3], [Reset(), 7, 8]) == [7, 8]


def test_list_with_only_reset_empties_the_list() -> None:
    assert accumulate([1, 2], [Reset()]) == []


def test_later_resets_in_a_list_are_dropped_not_applied() -> None:
    assert accumulate([1], [2, Reset(), 3]) == [1, 2, 3]
    assert accumulate([1], [Reset(), 2, Reset(), 3]) == [2, 3]


def test_reset_then_appends_accumulate_again() -> None:
    state: list[Any] = accumulate([1, 2], [Reset(), 10])
    state = accumulate(state, [11])
    state = accumulate(state, [12, 13])
    assert state == [10, 11, 12, 13]


def test_reset_values_compare_equal_and_are_frozen() -> None:
    assert Reset() == Reset()
    with pytest.raises(ValueError):
        Reset().reset = False  # type: ignore[misc]


def test_merge_by_key_merges_and_update_wins() -> None:
    assert merge_by_key({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}


def test_merge_by_key_handles_none() -> None:
    assert merge_by_key(None, {"a": 1}) == {"a": 1}
    assert merge_by_key({"a": 1}, None) == {"a": 1}
    assert merge_by_key(None, None) == {}


def test_merge_by_key_reset_empties() -> None:
    assert merge_by_key({"a": 1}, Reset()) == {}


def test_merge_by_key_does_not_mutate_current() -> None:
    current = {"a": 1}
    merged = merge_by_key(current, {"b": 2})
    assert current == {"a": 1}
    assert merged is not current


@pytest.mark.parametrize(
    ("a", "b", "c"),
    [([], [], []), ([1], [2, 3], [4]), ([1, 1], [], [1]), ([], [5], [])],
)
def test_accumulate_chain_equals_concatenation(a: list[int], b: list[int], c: list[int]) -> None:
    assert accumulate(accumulate(a, b), c) == a + b + c


def test_accumulate_chain_property() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.lists(st.integers()), st.lists(st.integers()), st.lists(st.integers()))
    def check(a: list[int], b: list[int], c: list[int]) -> None:
        assert accumulate(accumulate(a, b), c) == a + b + c
        assert accumulate(a, [*b, *c]) == a + b + c

    check()
