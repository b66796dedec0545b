"""Bad input of every kind: one `error:` line, a non-zero exit, no traceback, the store untouched.

A table of cases, each a drpo command line with a bad config file, data file, flag, environment
variable, run id, prompt file or storage path. Every case runs against a copy of a run store that
already holds a completed run and a run waiting for review, and the bytes of every file in the
store's folder are compared before and after. (tests/integration/test_cli_errors.py has 21 more
cases; the two tables do not overlap.)

Root ignores file permissions, so "no permission" is made with paths that cannot exist (a path
under a regular file such as /etc/passwd) or with directories where files belong; a read-only
and a full disk are a read-only bind mount and a tiny tmpfs (skipped where mounting is denied).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_runner import run_drpo
from stub_server import StubProcess

from drpo.checkpoints.store import RunStore
from drpo.graph.review import pending_request

pytestmark = pytest.mark.integration

SUPPORT = Path(__file__).resolve().parents[1] / "support"
SCRIPT = f"{SUPPORT / 'scripted_llm.py'}:default()"
SMALL = ["--depth", "1", "--set", "data.retrieval=bm25", "--set", "examples.limit=1"]


@dataclass(frozen=True)
class Case:
    """One bad input: the command (with placeholders), the expected message, extra env vars."""

    args: tuple[str, ...]
    expected: str
    env: dict[str, str] = field(default_factory=dict)
    mount: str | None = None  # "readonly" or "full": the store folder is on such a disk
    bug: str = ""  # a known bug outside this suite's reach: the case is a strict xfail
    own_endpoint: bool = False  # the case is about endpoints: the stub is not added


# Placeholders: {tmp} a scratch folder with the bad files, {store} the run store copy (in
# {store_dir}), {stub} the stub server, {done} the completed run, {waiting} the waiting run and
# {candidate} the candidate it waits on.
OPT = ("optimize", "--store", "{store}", "--checkpoints", "{store_dir}/checkpoints.db")
CASES: dict[str, Case] = {
    # ---- config files and settings
    "config is a directory": Case(("optimize", "--config", "{tmp}"), "config file is a directory"),
    "config not UTF-8": Case(("optimize", "--config", "{tmp}/latin1.toml"), "not UTF-8 text"),
    "config value of the wrong type": Case(
        ("optimize", "--config", "{tmp}/wrongtype.toml"), "invalid setting 'search.width'"
    ),
    "config endpoint not a URL": Case(
        ("optimize", "--config", "{tmp}/endpoint.toml"),
        "invalid setting 'judge.endpoint'",
        own_endpoint=True,
    ),
    "config section not a table": Case(
        ("optimize", "--config", "{tmp}/section.toml"), "invalid setting 'search'"
    ),
    "environment value invalid": Case(
        ("optimize",), "invalid setting 'search.depth'", env={"DRPO_SEARCH__DEPTH": "deep"}
    ),
    "environment setting unknown": Case(
        ("optimize",), "unknown setting in environment variable", env={"DRPO_COLOUR__HUE": "1"}
    ),
    # ---- command-line flags
    "flag not a number": Case(("optimize", "--width", "two"), "'--width'"),
    "unknown flag": Case(("optimize", "--colour", "red"), "--colour"),
    "negative depth": Case(("optimize", "--depth", "-1"), "invalid setting 'search.depth'"),
    "--set boolean not a boolean": Case(
        ("optimize", "--set", "search.dedupe=maybe"), "invalid setting 'search.dedupe'"
    ),
    "--set temperature out of range": Case(
        ("optimize", "--set", "judge.temperature=5"), "invalid setting 'judge.temperature'"
    ),
    "--set provider unknown": Case(
        ("optimize", "--set", "judge.provider=openia"), "invalid setting 'judge.provider'"
    ),
    "provider contradicts the embedded server": Case(
        ("optimize", "--set", "base.provider=vllm"),
        "base.provider = 'vllm' contradicts endpoint 'embedded'",
        own_endpoint=True,
    ),
    # ---- data files
    "query over 20000 characters": Case(
        ("optimize", "--train", "{tmp}/long.jsonl"), "query too long (20001 characters"
    ),
    "examples CSV not UTF-8": Case(
        ("optimize", "--examples", "{tmp}/latin1.csv"), "latin1.csv line 2: not UTF-8 text"
    ),
    "query with a lone surrogate": Case(
        ("optimize", "--train", "{tmp}/surrogate.jsonl"), "surrogate.jsonl line 1:"
    ),
    "validation CSV with only a header": Case(
        ("optimize", "--validation", "{tmp}/header.csv"), "header.csv: no records"
    ),
    "train JSON empty list": Case(("optimize", "--train", "{tmp}/empty.json"), "no records"),
    "train JSON object without a list": Case(
        ("optimize", "--train", "{tmp}/object.json"), "expected a list of records"
    ),
    "blank query": Case(("optimize", "--train", "{tmp}/blank.jsonl"), "line 1: query is empty"),
    "duplicate query ids": Case(
        ("optimize", "--train", "{tmp}/dupes.jsonl"), "line 2: duplicate id 'q1'"
    ),
    "harmful flag not a boolean": Case(
        ("optimize", "--train", "{tmp}/harmful.jsonl"), "invalid value for 'harmful'"
    ),
    "train path is a directory": Case(("optimize", "--train", "{tmp}/dir.jsonl"), "not a file"),
    "train path under a regular file": Case(
        ("optimize", "--train", "/etc/passwd/train.jsonl"), "file not found"
    ),
    # ---- run store and checkpoint paths
    "store under a regular file": Case(
        (*OPT[:2], "/etc/passwd/runs.db", *OPT[3:]), "/etc/passwd/runs.db"
    ),
    "store is a directory": Case(
        (*OPT[:2], "{tmp}/dir.jsonl", *OPT[3:]), "dir.jsonl is not a regular file"
    ),
    "checkpoints under a regular file": Case(
        (*OPT[:3], "--checkpoints", "/etc/passwd/ck.db"), "/etc/passwd is not a directory"
    ),
    "checkpoints is a directory": Case((*OPT[:3], "--checkpoints", "{tmp}"), "checkpoint database"),
    "store is not a database": Case(("runs", "--store", "{tmp}/notes.db"), "not a database"),
    "store is another program's database": Case(
        ("runs", "--store", "{tmp}/foreign.db"), "not a drpo run store"
    ),
    "store on a read-only disk": Case(OPT, "runs.db", mount="readonly"),
    "store on a full disk": Case(OPT, "runs.db", mount="full"),
    # ---- run ids and review decisions
    "empty run id": Case(("show", "", "--store", "{store}"), "no run ''"),
    "resume a completed run": Case(
        ("resume", "{done}", "--store", "{store}"), "is already completed"
    ),
    "approve a run that waits for nothing": Case(
        ("approve", "{done}", "--candidate", "x", "--store", "{store}"), "not waiting"
    ),
    "approve the wrong candidate": Case(
        ("approve", "{waiting}", "--candidate", "nope", "--store", "{store}"),
        "'nope' is not awaiting review",
    ),
    "fork at a step that does not exist": Case(
        ("fork", "{done}", "--at", "99999", "--store", "{store}"), "99999"
    ),
    # ---- prompt files (edit, fork)
    "prompt file missing": Case(
        ("edit", "{waiting}", "--candidate", "{candidate}", "--file", "{tmp}/nope.txt"),
        "prompt file not found",
    ),
    "prompt file not UTF-8": Case(
        ("edit", "{waiting}", "--candidate", "{candidate}", "--file", "{tmp}/latin1.txt"),
        "is not UTF-8 text",
    ),
    "prompt file empty": Case(
        ("edit", "{waiting}", "--candidate", "{candidate}", "--file", "{tmp}/blank.txt"),
        "is empty",
    ),
    "prompt file is a directory": Case(
        ("fork", "{done}", "--at", "1", "--prompt-file", "{tmp}", "--store", "{store}"),
        "is a directory",
    ),
    "export under a regular file": Case(
        ("export", "{done}", "-o", "/etc/passwd/prompt.md", "--store", "{store}"),
        "/etc/passwd/prompt.md",
    ),
}


def write_bad_files(folder: Path) -> None:
    """Create the bad files the cases name."""
    texts: dict[str, str | bytes] = {
        "latin1.toml": "[search]\nwidth = 2\n# caf\xe9\n".encode("latin-1"),
        "wrongtype.toml": '[search]\nwidth = "two"\n',
        "endpoint.toml": '[judge]\nendpoint = "ftp://example.com"\n',
        "section.toml": "search = 3\n",
        "long.jsonl": '{"query": "' + "x" * 20_001 + '"}\n',
        "latin1.csv": "query,answer\ncaf\xe9?,oui\n".encode("latin-1"),
        "surrogate.jsonl": '{"query": "hello \\ud800 world"}\n',
        "header.csv": "query,category\n",
        "empty.json": "[]",
        "object.json": '{"rows": [{"query": "a"}]}',
        "blank.jsonl": '{"query": "   "}\n',
        "dupes.jsonl": '{"id": "q1", "query": "a"}\n{"id": "q1", "query": "b"}\n',
        "harmful.jsonl": '{"query": "a", "harmful": "maybe"}\n',
        "notes.db": "these are my notes, not a database\n",
        "latin1.txt": "You are caf\xe9.".encode("latin-1"),
        "blank.txt": "  \n\n",
    }
    for name, text in texts.items():
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    (folder / "dir.jsonl").mkdir()
    create_foreign_database(folder / "foreign.db")


def create_foreign_database(path: Path) -> None:
    """Create another program's SQLite database (a table drpo knows nothing about)."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("create table things (id integer primary key, name text)")
        connection.execute("insert into things (name) values ('kept as it is')")
    connection.close()


@dataclass(frozen=True)
class Sentinel:
    """A run store folder holding a completed run and a run waiting for review."""

    folder: Path
    done: str
    waiting: str
    candidate: str
    stub: str


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinel]:
    folder = tmp_path_factory.mktemp("sentinel")
    store = folder / "runs.db"
    with StubProcess(SCRIPT) as stub:
        common = [
            "--endpoint",
            stub.base_url,
            "--model",
            "stub-model",
            "--store",
            str(store),
            "--checkpoints",
            str(folder / "checkpoints.db"),
            *SMALL,
        ]
        done = run_drpo("optimize", *common)
        assert done.returncode == 0, done.stderr
        waiting = run_drpo("optimize", *common, "--review", "every")
        assert waiting.returncode == 3, waiting.stderr
        opened = RunStore(store)
        runs = {r["status"]: r["id"] for r in opened.runs()}
        opened.close()  # an open connection would leave -wal/-shm files to be copied
        request = asyncio.run(pending_request(runs["waiting"], store))
        assert request is not None
        yield Sentinel(
            folder, runs["completed"], runs["waiting"], request.candidate_id, stub.base_url
        )


def snapshot(folder: Path) -> dict[str, str]:
    """The sha256 of every file in a folder that holds data.

    SQLite's `-shm` file is a shared-memory index rebuilt by every connection, and an empty
    `-wal` file holds nothing (one can stay behind when a full disk stops SQLite from removing
    it); both are left out.
    """
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
        and not p.name.endswith("-shm")
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRPO_")}
    return run_drpo(*argv, cwd=cwd, env={**environ, **env, "COLUMNS": "200"})


@contextlib.contextmanager
def mounted(kind: str | None, folder: Path) -> Iterator[None]:
    """Put `folder` on a read-only bind mount or a full tmpfs for the duration."""
    if kind is None:
        yield
        return
    if kind == "readonly":
        commands = [
            ["mount", "--bind", str(folder), str(folder)],
            ["mount", "-o", "remount,ro,bind", str(folder)],
        ]
    else:
        saved = folder.with_name(folder.name + "-saved")
        shutil.copytree(folder, saved)
        commands = [["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]]
    for command in commands:
        if subprocess.run(command, capture_output=True).returncode != 0:
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(["umount", str(folder)], capture_output=True, check=True)
            pytest.skip(f"cannot mount ({' '.join(command)}): needs root and mount rights")
    try:
        if kind == "full":
            for path in saved.iterdir():
                shutil.copy2(path, folder / path.name)
            with contextlib.suppress(OSError), (folder / "filler").open("wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, check=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(
    name: str, sentinel: Sentinel, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    case = CASES[name]
    bad = tmp_path / "bad"
    bad.mkdir()
    write_bad_files(bad)
    store_dir = tmp_path / "store"
    shutil.copytree(sentinel.folder, store_dir)
    values = {
        "tmp": str(bad),
        "store": str(store_dir / "runs.db"),
        "store_dir": str(store_dir),
        "stub": sentinel.stub,
        "done": sentinel.done,
        "waiting": sentinel.waiting,
        "candidate": sentinel.candidate,
    }
    argv = [arg.format(**values) for arg in case.args]
    if "--store" not in argv and argv[0] in ("optimize", "edit"):
        argv += ["--store", values["store"]]
    if argv[0] == "optimize":
        if "--checkpoints" not in argv:
            argv += ["--checkpoints", f"{store_dir}/checkpoints.db"]
        if not case.own_endpoint:
            # Should a case wrongly pass, it runs against the stub, never the embedded model.
            argv += ["--endpoint", sentinel.stub, "--model", "stub-model"]
    if case.bug:
        request.applymarker(pytest.mark.xfail(reason=case.bug, strict=True))
    bad_before, sentinel_before = snapshot(bad), snapshot(sentinel.folder)
    with mounted(case.mount, store_dir):
        before = snapshot(store_dir)
        done = run(argv, tmp_path, case.env)
        after = snapshot(store_dir)
    assert done.returncode != 0, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert case.expected in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert after == before, "the run store changed"
    # Stored runs name the original checkpoint file, which review commands open.
    assert snapshot(sentinel.folder) == sentinel_before, "the original run store changed"
    assert snapshot(bad) == bad_before, "a bad input file changed"
    assert not Path("/etc/passwd/runs.db").exists()
