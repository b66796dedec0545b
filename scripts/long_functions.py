"""List the package's functions longer than a screen (default 60 lines), longest first.

    .venv/bin/python scripts/long_functions.py [--limit N]

Tests, benchmarks and scripts are left out: the rule is for the package's own code.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {"tests", "bench", "scripts", ".venv", "docs", "examples"}


def long_functions(limit: int) -> list[tuple[int, str, str]]:
    """(length, file, name) of every function longer than `limit` lines."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in SKIPPED or relative.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append((length, f"{relative}:{node.lineno}", node.name))
    return sorted(found, reverse=True)


def main() -> None:
    """Print the long functions, one a line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60)
    for length, where, name in long_functions(parser.parse_args().limit):
        print(f"{length:4d}  {where}  {name}")


if __name__ == "__main__":
    main()
