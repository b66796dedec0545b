"""Tests for the shipped seed data and the example / query loaders (formats, aliases, errors)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from drpo.data.loaders import (
    DATA_SCHEMA_DOC,
    MAX_TEXT_CHARS,
    DataFileError,
    load_examples,
    load_queries,
    seed_examples,
    train_queries,
    validation_queries,
)
from drpo.state.types import Example, Query


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- shipped data ---------------------------------------------------------------------------


def test_seed_examples_count_and_mix() -> None:
    examples = seed_examples()
    categories = Counter(e.category for e in examples)
    assert len(examples) >= 16
    assert categories["harmful"] >= 5
    for category in ("informational", "advice", "reasoning", "coding", "creative"):
        assert categories[category] >= 2, category


def test_seed_answers_fit_a_small_prompt() -> None:
    for example in seed_examples():
        words = len(example.answer.split())
        assert 70 <= words <= 230, (example.id, words)


def test_seed_harmful_answers_refuse_and_offer_an_alternative() -> None:
    refusal = re.compile(r"\b(can't|cannot|won't)\b", re.IGNORECASE)
    for example in seed_examples():
        if example.category == "harmful":
            opening = example.answer.split("\n")[0]
            assert refusal.search(opening), example.id
            # A reasoned refusal goes on to offer something safe, usually as a list.
            assert "\n- " in example.answer, example.id


def test_train_queries_count_and_mix() -> None:
    queries = train_queries()
    sensitive = [q for q in queries if q.category in ("harmful", "borderline")]
    assert len(queries) >= 80
    assert 0.20 <= len(sensitive) / len(queries) <= 0.35
    assert all(q.harmful == (q.category == "harmful") for q in queries)
    categories = Counter(q.category for q in queries)
    for category in ("informational", "advice", "reasoning", "coding", "creative"):
        assert categories[category] >= 8, category


def test_validation_queries_count_and_mix() -> None:
    queries = validation_queries()
    categories = Counter(q.category for q in queries)
    assert len(queries) >= 30
    assert categories["harmful"] >= 3
    assert all(q.harmful == (q.category == "harmful") for q in queries)


def test_shipped_files_do_not_share_query_texts() -> None:
    texts = {
        "examples": [e.query for e in seed_examples()],
        "train": [q.query for q in train_queries()],
        "validation": [q.query for q in validation_queries()],
    }
    all_texts = [_normalised(t) for group in texts.values() for t in group]
    assert len(all_texts) == len(set(all_texts))


def test_shipped_ids_are_unique_and_prefixed() -> None:
    groups: list[tuple[str, list[Example] | list[Query]]] = [
        ("ex-", seed_examples()),
        ("tr-", train_queries()),
        ("va-", validation_queries()),
    ]
    ids = [item.id for _, items in groups for item in items]
    assert len(ids) == len(set(ids))
    for prefix, items in groups:
        assert all(item.id.startswith(prefix) for item in items)


def test_schema_doc_names_the_fields() -> None:
    for name in ("`id`", "`query`", "`answer`", "`category`", "`harmful`", "`instruction`"):
        assert name in DATA_SCHEMA_DOC


# --- formats and aliases ----------------------------------------------------------------------


def test_load_queries_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"id": "a", "query": "What is 2+2?", "category": "reasoning"},
            {"id": "b", "query": "Hack my neighbour's wifi", "category": "harmful"},
        ],
    )
    assert load_queries(path) == [
        Query(id="a", query="What is 2+2?", category="reasoning", harmful=False),
        Query(id="b", query="Hack my neighbour's wifi", category="harmful", harmful=True),
    ]


def test_blank_lines_are_skipped_and_ids_generated_from_the_record_number(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"query": "one"}\n\n{"query": "two"}\n', encoding="utf-8")
    assert [q.id for q in load_queries(path)] == ["mine-1", "mine-2"]


def test_load_examples_json_list_and_wrapped(tmp_path: Path) -> None:
    records = [{"query": "Hi?", "answer": "Hello!", "category": "general"}]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(records), encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"examples": records, "version": 2}), encoding="utf-8")
    assert load_examples(listed) == [Example(id="list-1", query="Hi?", answer="Hello!")]
    assert load_examples(wrapped) == [Example(id="wrapped-1", query="Hi?", answer="Hello!")]


@pytest.mark.parametrize("key", ["data", "queries"])
def test_load_queries_json_wrapper_keys(tmp_path: Path, key: str) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps({key: [{"id": 7, "prompt": "Tell a joke"}]}), encoding="utf-8")
    assert load_queries(path) == [Query(id="7", query="Tell a joke")]


def test_load_queries_csv(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text(
        "id,Query,category,harmful,notes\n"
        'q1,"Hello, world?",coding,false,x\n'
        "q2,Make a weapon,harmful,1,\n"
        ",Unnamed row,,,\n"
        "q4,Odd flag,borderline,TRUE,\n",
        encoding="utf-8",
    )
    assert load_queries(path) == [
        Query(id="q1", query="Hello, world?", category="coding", harmful=False),
        Query(id="q2", query="Make a weapon", category="harmful", harmful=True),
        Query(id="q-3", query="Unnamed row", category="general", harmful=False),
        Query(id="q4", query="Odd flag", category="borderline", harmful=True),
    ]


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffquery,answer\nQ?,A.\n".encode())
    assert load_examples(path) == [Example(id="bom-1", query="Q?", answer="A.")]


def test_instruction_input_and_output_aliases(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "just_eval.jsonl",
        [
            {
                "id": "je-1",
                "instruction": "Summarise this text.",
                "input": "Cats sleep a lot.",
                "output": "Cats are sleepy.",
                "generator": "gpt-4",
                "dataset": "alpaca_eval",
            },
            {"instruction": "No input here.", "input": "", "response": "Fine."},
        ],
    )
    examples = load_examples(path)
    assert examples[0] == Example(
        id="je-1", query="Summarise this text.\n\nCats sleep a lot.", answer="Cats are sleepy."
    )
    assert examples[1] == Example(id="just_eval-2", query="No input here.", answer="Fine.")


def test_question_alias_and_unknown_category(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "q.jsonl",
        [{"question": "Why?", "category": "Physics", "harmful": True}],
    )
    assert load_queries(path) == [Query(id="q-1", query="Why?", category="general", harmful=True)]


def test_queries_loader_accepts_an_examples_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ex.jsonl", [{"id": "e", "query": "Q", "answer": "A"}])
    # The example's answer becomes the query's reference answer (issue #17).
    assert load_queries(path) == [Query(id="e", query="Q", reference="A")]


# --- errors ---------------------------------------------------------------------------------


def _message(excinfo: pytest.ExceptionInfo[DataFileError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_query_field_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "ok"}\n\n{"text": "no query"}\n', encoding="utf-8")
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    message = _message(excinfo)
    assert message.startswith(f"{path} line 3: missing field 'query'")
    assert excinfo.value.where == "line 3"


def test_missing_answer_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ex.jsonl", [{"query": "Q"}])
    with pytest.raises(DataFileError, match=r"line 1: missing field 'answer' \(or 'output'"):
        load_examples(path)


def test_missing_field_in_json_names_the_record(tmp_path: Path) -> None:
    path = tmp_path / "ex.json"
    path.write_text(json.dumps([{"query": "Q", "answer": "A"}, {"query": "Q2"}]), "utf-8")
    with pytest.raises(DataFileError, match=r"ex\.json record 2: missing field 'answer'"):
        load_examples(path)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a"}\n{"query": "b"}\n{"query": "c" "x"}\n', encoding="utf-8")
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    assert _message(excinfo) == f"{path} line 3: invalid JSON (Expecting ',' delimiter)"


def test_invalid_json_document_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"query": "a"},\n  {"query": }\n]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"bad\.json line 3: invalid JSON"):
        load_queries(path)


def test_record_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "a"}\n["query", "b"]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"line 2: expected an object, got a list"):
        load_queries(path)


def test_json_object_without_a_record_list(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"'data', 'examples' or 'queries' list"):
        load_queries(path)


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"\xef\xbb\xbf\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    assert _message(excinfo) == f"file is empty: {path}"


@pytest.mark.parametrize(("name", "content"), [("e.json", "[]"), ("e.csv", "id,query\n")])
def test_file_without_records(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError, match=r": no records$"):
        load_queries(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"query": "ok"}\n{"query": "caf\xe9"}\n')
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    assert _message(excinfo) == f"{path} line 2: not UTF-8 text"


def test_duplicate_id(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "dup.jsonl",
        [{"id": "x", "query": "a"}, {"id": "y", "query": "b"}, {"id": "x", "query": "c"}],
    )
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    assert _message(excinfo) == f"{path} line 3: duplicate id 'x' (first on line 1)"


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    assert _message(excinfo) == (
        f"{path}: unsupported file type '.xlsx' (use .jsonl, .json or .csv)"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataFileError) as excinfo:
        load_examples(path)
    assert _message(excinfo) == f"file not found: {path}"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="not a file"):
        load_queries(tmp_path)


def test_empty_query(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [{"query": "fine"}, {"query": "   "}])
    with pytest.raises(DataFileError, match=r"line 2: query is empty$"):
        load_queries(path)


def test_query_too_long(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [{"query": "x" * (MAX_TEXT_CHARS + 1)}])
    with pytest.raises(DataFileError) as excinfo:
        load_queries(path)
    assert _message(excinfo).endswith(
        f"line 1: query too long ({MAX_TEXT_CHARS + 1} characters; limit {MAX_TEXT_CHARS})"
    )


def test_query_that_is_not_text(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [{"prompt": 42}])
    with pytest.raises(DataFileError, match=r"line 1: field 'prompt' must be text, got a number"):
        load_queries(path)


def test_invalid_harmful_value(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("query,harmful\nHi,maybe\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"line 2: invalid value for 'harmful': 'maybe'"):
        load_queries(path)


def test_error_is_a_value_error() -> None:
    assert issubclass(DataFileError, ValueError)


def test_queries_keep_their_reference_answers(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"id": "a", "query": "Capital of Japan?", "reference": " Tokyo "},
            {"id": "b", "query": "7 x 8?", "answer": "56"},
            {"id": "c", "query": "No reference here."},
            {"id": "d", "query": "Both?", "reference": "ref wins", "answer": "other"},
        ],
    )
    assert [q.reference for q in load_queries(path)] == ["Tokyo", "56", None, "ref wins"]
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text("query,reference\nQ1?,R1\nQ2?,\n", encoding="utf-8")
    assert [q.reference for q in load_queries(csv_file)] == ["R1", None]


def test_a_reference_that_is_not_text_names_the_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "qa.jsonl", [{"query": "Q", "reference": 42}])
    with pytest.raises(DataFileError, match=r"qa.jsonl line 1: field 'reference' must be text"):
        load_queries(path)
