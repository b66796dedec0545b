"""The model calls per role of one fixed scripted search, to compare two versions of drpo.

    python bench/calls_by_role.py [--drpo PATH ...]

For each `drpo` executable given (default: this checkout's `.venv/bin/drpo`), runs `drpo optimize`
against the stub server with the scripted model (`tests/support/scripted_llm.py`): width 2 × 2
actions × depth 2, stage A on 2 examples of 1 round, 2 validation queries, BM25 retrieval, one
call at a time. Prints the requests the stub received per role, counted from the stub's own
record rather than a run store, so a version with another store schema compares alike. A
refactor that changes no behaviour prints the same row for both versions (issue #14); the
executables' checkouts are compared with this checkout's stub and scripted model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The stub imports its provider rules as a sibling module, as when it runs as a script.
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from tests.support.stub_runs import SCRIPT, optimize_args  # noqa: E402
from tests.support.stub_server import PROBE_ROLES, StubProcess, load_records  # noqa: E402

# The stub names a request by its reply schema (or "base" for a plain chat call): the role it is.
ROLE_OF = {
    "AspectChoice": "selector",
    "Judgement": "judge",
    "PromptProposal": "optimizer",
    "ExampleRewrite": "optimizer",
    "base": "base",
}
ROLES = ("base", "selector", "judge", "optimizer")


def calls_by_role(drpo: Path, folder: Path) -> Counter[str]:
    """Run the fixed search with `drpo` and count the stub's requests per role."""
    record = folder / "calls.jsonl"
    with StubProcess(SCRIPT, record=record) as stub:
        args = optimize_args(stub.base_url, folder, concurrency=1)
        done = subprocess.run([str(drpo), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"error: {drpo} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    roles: Counter[str] = Counter()
    for call in load_records(record):
        if call["role"] not in PROBE_ROLES:
            roles[ROLE_OF.get(call["role"], call["role"])] += 1
    return roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drpo", type=Path, action="append", help="a drpo executable (repeatable)")
    executables = parser.parse_args().drpo or [ROOT / ".venv" / "bin" / "drpo"]
    print(f"{'drpo':<50} " + " ".join(f"{role:>9}" for role in ROLES) + "      all")
    for drpo in executables:
        with tempfile.TemporaryDirectory() as folder:
            roles = calls_by_role(drpo, Path(folder))
        row = " ".join(f"{roles.get(role, 0):>9}" for role in ROLES)
        others = {k: v for k, v in roles.items() if k not in ROLES}
        print(f"{drpo!s:<50} {row} {sum(roles.values()):>8}" + (f"  {others}" if others else ""))


if __name__ == "__main__":
    main()
