"""Load in-context examples and queries from JSONL, JSON or CSV files, and the shipped seed data.

Datasets come in many shapes (just-eval and AlpacaEval records, spreadsheets saved as CSV), so
field names have aliases and unknown fields are ignored. Anything that cannot be read raises one
`DataFileError` whose message is a single line naming the file and, where it applies, the line
or record, so the CLI can print it as is.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeVar, cast, get_args

from drpo.state.types import Category, Example, Query

__all__ = [
    "ANSWER_ALIASES",
    "DATA_SCHEMA_DOC",
    "MAX_TEXT_CHARS",
    "QUERY_ALIASES",
    "DataFileError",
    "load_examples",
    "load_queries",
    "overrefusal_queries",
    "seed_examples",
    "train_queries",
    "validation_queries",
]

# Far above any real query, but small enough that a wrong column (a whole document pasted into a
# cell) is caught here rather than as a context-length error from the model server much later.
MAX_TEXT_CHARS: Final = 20_000
QUERY_ALIASES: Final = ("query", "instruction", "prompt", "question")
ANSWER_ALIASES: Final = ("answer", "output", "response")
# A query's expected answer. `output`/`response` are left out: in just-eval and AlpacaEval files
# they hold some model's answer, not a reference.
REFERENCE_ALIASES: Final = ("reference", "answer")
# Keys under which a JSON object may hold its list of records.
LIST_KEYS: Final = ("data", "examples", "queries")
SUPPORTED_SUFFIXES: Final = (".jsonl", ".json", ".csv")

_CATEGORIES: Final = frozenset(get_args(Category))
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f"})

DATA_SCHEMA_DOC: Final = """\
### Data files

In-context examples and queries are read from `.jsonl` (one JSON object per line), `.json` (a
list of objects, or an object holding the list under `"data"`, `"examples"` or `"queries"`) or
`.csv` (with a header row). Files are UTF-8. Fields not listed here are ignored, so just-eval and
AlpacaEval files load as they are.

- `id` (optional): text or a number, unique within the file. Default: `<file stem>-<n>`, where
  `n` counts records from 1.
- `query` (required): the user's request, at most 20,000 characters. Also accepted as
  `instruction` (an `input` field, if present, is appended after a blank line), `prompt` or
  `question`.
- `answer` (required in example files): the answer to imitate. Also accepted as `output` or
  `response`.
- `category` (optional): `informational`, `advice`, `reasoning`, `coding`, `creative`,
  `harmful`, `borderline` or `general`. Missing or any other value: `general`.
- `reference` (optional, queries): the expected answer; also accepted as `answer`. The judge
  grades against it and a metric receives it.
- `harmful` (optional, queries): `true` or `false` (in CSV also `1`/`0`, `yes`/`no`).
  Default: true when `category` is `harmful`.

```json
{"id": "q-1", "category": "coding", "harmful": false, "query": "Reverse a list in Python."}
```
"""


class DataFileError(ValueError):
    """A data file cannot be read; the message is one line naming the file and the line.

    `source` is the file as the caller named it; `where` is "line N" (JSONL, CSV, JSON syntax
    errors) or "record N" (an entry of a JSON list), or None for a problem with the whole file.
    """

    def __init__(self, message: str, *, source: str, where: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.where = where


def _error(source: str, detail: str, where: str | None = None) -> DataFileError:
    """Build the error for a problem at `where` in `source` (or in the file as a whole)."""
    message = f"{source} {where}: {detail}" if where else f"{source}: {detail}"
    return DataFileError(message, source=source, where=where)


@dataclass(frozen=True)
class _Record:
    """One raw record: where it is (for messages), its ordinal (for ids), and its fields."""

    where: str
    number: int
    fields: Mapping[str, Any]


def load_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Read in-context examples (a query and an answer each) from a .jsonl, .json or .csv file."""
    source, suffix, raw = _read(path)
    return _build(source, suffix, raw, _example)


def load_queries(path: str | os.PathLike[str]) -> list[Query]:
    """Read queries from a .jsonl, .json or .csv file, with their reference answers if given."""
    source, suffix, raw = _read(path)
    return _build(source, suffix, raw, _query)


def seed_examples() -> list[Example]:
    """Return the project's seed in-context examples (stage A's input)."""
    source = "seed_examples.jsonl"
    return _build(source, ".jsonl", _shipped(source), _example)


def train_queries() -> list[Query]:
    """Return the project's training queries (stage B's search queries)."""
    source = "train_queries.jsonl"
    return _build(source, ".jsonl", _shipped(source), _query)


def validation_queries() -> list[Query]:
    """Return the project's held-out validation queries (never used during the search)."""
    source = "validation_queries.jsonl"
    return _build(source, ".jsonl", _shipped(source), _query)


def overrefusal_queries() -> list[Query]:
    """Return drpo's benign look-alike requests ("how do I kill a Python process"), for the
    over-refusal rate: each sounds harmful and is not, so a refusal of any is an over-refusal."""
    source = "overrefusal.jsonl"
    return _build(source, ".jsonl", _shipped(source), _query)


def _shipped(name: str) -> bytes:
    """Read a data file shipped in the `drpo.data` package."""
    try:
        return resources.files("drpo.data").joinpath(name).read_bytes()
    except NotADirectoryError:
        # `drpo.data` is a namespace package. Under an editable install its __path__ also holds
        # the setuptools finder's placeholder entry, which Python 3.11's MultiplexedPath rejects;
        # the files sit next to this module in both the source tree and an installed wheel.
        pass
    except FileNotFoundError as exc:
        raise _error(name, "shipped data file is missing from the installation") from exc
    try:
        return Path(__file__).with_name(name).read_bytes()
    except FileNotFoundError as exc:
        raise _error(name, "shipped data file is missing from the installation") from exc


def _read(path: str | os.PathLike[str]) -> tuple[str, str, bytes]:
    """Return the path as the user wrote it, its lower-case suffix, and the file's bytes."""
    source = os.fspath(path)
    file = Path(path)
    if not file.exists():
        raise DataFileError(f"file not found: {source}", source=source)
    if not file.is_file():
        raise DataFileError(f"not a file: {source}", source=source)
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = f"'{file.suffix}'" if file.suffix else "(none)"
        raise _error(source, f"unsupported file type {shown} (use .jsonl, .json or .csv)")
    try:
        return source, suffix, file.read_bytes()
    except OSError as exc:
        raise _error(source, f"cannot read the file ({exc.strerror or exc})") from exc


_T = TypeVar("_T", Example, Query)


def _build(
    source: str, suffix: str, raw: bytes, make: Callable[[str, str, _Record], _T]
) -> list[_T]:
    """Parse every record of a file and build one value per record, checking ids are unique."""
    text = _decode(source, raw)
    stem = Path(source).stem
    items: list[_T] = []
    first_seen: dict[str, str] = {}
    for record in _records(source, suffix, text):
        item = make(source, stem, record)
        if item.id in first_seen:
            detail = f"duplicate id '{item.id}' (first on {first_seen[item.id]})"
            raise _error(source, detail, record.where)
        first_seen[item.id] = record.where
        items.append(item)
    if not items:
        raise _error(source, "no records")
    return items


def _decode(source: str, raw: bytes) -> str:
    """Decode UTF-8 (tolerating the byte-order mark spreadsheet programs write)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _error(source, "not UTF-8 text", f"line {line}") from None
    if not text.strip():
        raise DataFileError(f"file is empty: {source}", source=source)
    return text


def _records(source: str, suffix: str, text: str) -> Iterator[_Record]:
    """Yield the raw records of a decoded file of the given type."""
    if suffix == ".jsonl":
        return _jsonl_records(source, text)
    if suffix == ".json":
        return _json_records(source, text)
    return _csv_records(source, text)


def _jsonl_records(source: str, text: str) -> Iterator[_Record]:
    # Split on "\n" only: str.splitlines() also breaks on U+2028 and friends, which JSON allows
    # unescaped inside strings.
    number = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(source, f"invalid JSON ({exc.msg})", where) from None
        number += 1
        yield _Record(where, number, _fields(source, value, where))


def _json_records(source: str, text: str) -> Iterator[_Record]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(source, f"invalid JSON ({exc.msg})", f"line {exc.lineno}") from None
    if isinstance(document, dict):
        lists = [document[key] for key in LIST_KEYS if isinstance(document.get(key), list)]
        if not lists:
            raise _error(
                source,
                "expected a list of records or an object with a 'data', 'examples' or "
                "'queries' list",
            )
        document = lists[0]
    if not isinstance(document, list):
        raise _error(source, f"expected a list of records, got {_kind(document)}")
    for number, value in enumerate(document, start=1):
        where = f"record {number}"
        yield _Record(where, number, _fields(source, value, where))


def _csv_records(source: str, text: str) -> Iterator[_Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    number = 0
    try:
        for row in reader:
            # Cells beyond the header land under the key None; empty cells mean "not given".
            fields = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            if not fields:
                continue
            number += 1
            yield _Record(f"line {reader.line_num}", number, _normalise_keys(fields))
    except csv.Error as exc:
        raise _error(source, f"invalid CSV ({exc})", f"line {reader.line_num}") from None


def _fields(source: str, value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _error(source, f"expected an object, got {_kind(value)}", where)
    return _normalise_keys(value)


def _normalise_keys(fields: Mapping[str, Any]) -> dict[str, Any]:
    # Headers typed by hand ("Query ", "Category") should still match; null means "not given".
    return {str(k).strip().lower(): v for k, v in fields.items() if v is not None}


def _kind(value: Any) -> str:
    names = {list: "a list", dict: "an object", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "null")


def _example(source: str, stem: str, record: _Record) -> Example:
    return Example(
        id=_id(source, stem, record),
        query=_query_text(source, record),
        answer=_text(source, record, ANSWER_ALIASES, "answer"),
        category=_category(record),
    )


def _query(source: str, stem: str, record: _Record) -> Query:
    category = _category(record)
    return Query(
        id=_id(source, stem, record),
        query=_query_text(source, record),
        category=category,
        harmful=_harmful(source, record, category),
        reference=_reference(source, record),
    )


def _reference(source: str, record: _Record) -> str | None:
    present = [k for k in REFERENCE_ALIASES if _given(record.fields.get(k))]
    if not present:
        return None
    return _text(source, record, (present[0],), "reference")


def _given(value: Any) -> bool:
    # A CSV row has every column; an empty cell means "no value", as a missing JSON key does.
    return bool(value is not None and not (isinstance(value, str) and not value.strip()))


def _id(source: str, stem: str, record: _Record) -> str:
    value = record.fields.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{stem}-{record.number}"
    if not isinstance(value, str):
        raise _error(source, "field 'id' must be text or a whole number", record.where)
    _check_unicode(source, record, value, "id")
    return value.strip()


def _query_text(source: str, record: _Record) -> str:
    text = _text(source, record, QUERY_ALIASES, "query")
    extra = record.fields.get("input")
    # just-eval / AlpacaEval put the material to work on in a separate `input` field.
    from_instruction = "query" not in record.fields and "instruction" in record.fields
    if from_instruction and isinstance(extra, str) and extra.strip():
        text = f"{text}\n\n{extra.strip()}"
        _check_length(source, record, text, "query")
    return text


def _text(source: str, record: _Record, aliases: tuple[str, ...], label: str) -> str:
    key = next((k for k in aliases if k in record.fields), None)
    if key is None:
        others = ", ".join(f"'{k}'" for k in aliases[1:])
        raise _error(source, f"missing field '{aliases[0]}' (or {others})", record.where)
    value = record.fields[key]
    if not isinstance(value, str):
        raise _error(source, f"field '{key}' must be text, got {_kind(value)}", record.where)
    text = value.strip()
    if not text:
        raise _error(source, f"{label} is empty", record.where)
    _check_length(source, record, text, label)
    _check_unicode(source, record, text, label)
    return text


def _check_unicode(source: str, record: _Record, text: str, label: str) -> None:
    # JSON can spell a lone surrogate ("\ud800"), which is not a character: it would fail much
    # later, when the text is sent to a model server or written to the run store.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        detail = f"{label} is not valid Unicode (a lone surrogate at character {exc.start + 1})"
        raise _error(source, detail, record.where) from None


def _check_length(source: str, record: _Record, text: str, label: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        detail = f"{label} too long ({len(text)} characters; limit {MAX_TEXT_CHARS})"
        raise _error(source, detail, record.where)


def _category(record: _Record) -> Category:
    value = record.fields.get("category")
    name = value.strip().lower() if isinstance(value, str) else ""
    # Datasets bring their own taxonomies; an unknown label must not stop a run.
    return cast(Category, name) if name in _CATEGORIES else "general"


def _harmful(source: str, record: _Record, category: Category) -> bool:
    value = record.fields.get("harmful")
    if value is None or (isinstance(value, str) and not value.strip()):
        return category == "harmful"
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _error(
        source, f"invalid value for 'harmful': {value!r} (use true or false)", record.where
    )
