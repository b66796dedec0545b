"""The shipped example metrics: exact match for QA, schema validity for extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drpo.data.loaders import load_queries
from drpo.nodes.metric import import_metric

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # examples are imported from where drpo runs, like `python -m`


def test_exact_match_forgives_wrapping_but_not_a_sentence() -> None:
    exact = import_metric("examples.task_qa.metric:exact_match")
    assert exact("q", " **Tokyo.** ", "Tokyo").score == 1.0
    assert exact("q", "`ABC`", "ABC").score == 1.0
    missed = exact("q", "The capital of Japan is Tokyo.", "Tokyo")
    assert missed.score == 0.0 and "expected exactly 'Tokyo'" in missed.reason
    with pytest.raises(ValueError, match="needs a reference"):
        exact("q", "Tokyo", None)


def test_schema_validity_scores_the_json_and_then_the_fields() -> None:
    valid = import_metric("examples.task_extraction.metric:schema_valid")
    reference = json.dumps({"name": "Tom Berg", "email": "tom@x.org", "company": None})
    fenced = f"```json\n{reference}\n```"
    assert valid("q", fenced, reference).score == 1.0
    partly = valid(
        "q", json.dumps({"name": "Tom", "email": "tom@x.org", "company": None}), reference
    )
    assert partly.score == pytest.approx(0.5 + 0.5 * 2 / 3) and "wrong: name" in partly.reason
    assert valid("q", '{"name": "Tom", "extra": 1}', reference).score == 0.0
    assert valid("q", "Sure! Here it is.", reference).score == 0.0


def test_the_shipped_task_sets_carry_reference_answers() -> None:
    qa = [
        q
        for name in ("train", "validation", "heldout")
        for q in load_queries(REPO / "examples" / "task_qa" / f"{name}.jsonl")
    ]
    assert len(qa) == 40 and len({q.query for q in qa}) == 40
    assert all(q.reference for q in qa)
    extraction = load_queries(REPO / "examples" / "task_extraction" / "train.jsonl")
    assert all(json.loads(q.reference or "") for q in extraction)
