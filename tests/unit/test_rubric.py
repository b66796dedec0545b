"""Rubric files: validation (one-line errors), replace/extend, when aspects apply, the hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from drpo.prompts.rubric import BUILTIN_RUBRIC, RubricError, load_rubric, parse_rubric
from drpo.state.types import Query

GOOD = """
mode = "replace"
[[aspects]]
name = "Correctness"
definition = "Gives the reference answer."
weight = 3
applies = "always"
[[aspects]]
name = "Brevity"
definition = "Answers in one line."
applies = { categories = ["coding"] }
[[aspects]]
name = "Clarity"
definition = "Easy to follow."
"""


def _write(tmp_path: Path, text: str, name: str = "rubric.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_replace_rubric_fixes_always_and_category_aspects_and_offers_the_rest(
    tmp_path: Path,
) -> None:
    rubric = load_rubric(_write(tmp_path, GOOD))
    coding = Query(id="c", query="Reverse a list.", category="coding")
    chat = Query(id="g", query="Hello?")
    assert [a.name for a in rubric.fixed_for(coding)] == ["Correctness", "Brevity"]
    assert [a.name for a in rubric.fixed_for(chat)] == ["Correctness"]
    assert [a.name for a in rubric.selectable()] == ["Clarity"]
    assert rubric.fixed_for(chat)[0].weight == 3.0
    assert rubric.lookup("clarity") is not None and rubric.lookup("Helpfulness") is None


def test_an_extend_rubric_keeps_the_builtin_aspects_and_overrides_same_names(
    tmp_path: Path,
) -> None:
    text = GOOD.replace('mode = "replace"', 'mode = "extend"')
    rubric = load_rubric(_write(tmp_path, text))
    names = [a.name for a in rubric.aspects]
    assert len(names) == len(BUILTIN_RUBRIC.aspects) + 2  # Clarity overridden, two new
    clarity = rubric.lookup("Clarity")
    assert clarity is not None and clarity.definition == "Easy to follow."
    assert rubric.lookup("Helpfulness") is not None


def test_json_rubrics_load_too_and_the_hash_follows_the_content(tmp_path: Path) -> None:
    one = parse_rubric({"aspects": [{"name": "A", "definition": "a", "weight": 1}]}, "x")
    two = parse_rubric({"aspects": [{"name": "A", "definition": "a", "weight": 2}]}, "x")
    path = _write(tmp_path, '{"aspects": [{"name": "A", "definition": "a"}]}', "r.json")
    assert load_rubric(path) == one
    assert one.hash != two.hash
    assert BUILTIN_RUBRIC.is_builtin and not one.is_builtin


@pytest.mark.parametrize(
    ("aspects", "message"),
    [
        (
            '[[aspects]]\nname = "A"\ndefinition = "a"\n[[aspects]]\nname = "a"\ndefinition = "b"',
            "duplicate aspect name 'a'",
        ),
        ('[[aspects]]\nname = "A"\ndefinition = "a"\nweight = -1', "aspect 'A' weight:"),
        (
            '[[aspects]]\nname = "A"\ndefinition = "a"\napplies = "sometimes"',
            "aspect 'A': 'applies' must be \"always\", \"selector\" or {categories = [...]}",
        ),
        (
            '[[aspects]]\nname = "A"\ndefinition = "a"\napplies = { categories = ["sport"] }',
            "aspect 'A': 'applies' must be",
        ),
        ('[[aspects]]\nname = "A"\ndefinition = "a"\ncolour = "red"', "aspect 'A' colour:"),
        ("aspects = []", "aspects:"),
        ("aspects = [", "is not valid TOML"),
    ],
)
def test_a_bad_rubric_is_one_line_naming_the_file(
    tmp_path: Path, aspects: str, message: str
) -> None:
    path = _write(tmp_path, aspects)
    with pytest.raises(RubricError) as caught:
        load_rubric(path)
    text = str(caught.value)
    assert text.startswith(f"rubric file {path}")
    assert message in text
    assert "\n" not in text


def test_a_missing_rubric_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RubricError, match="rubric file not found"):
        load_rubric(tmp_path / "nope.toml")
