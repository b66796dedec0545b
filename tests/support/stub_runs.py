"""`drpo optimize` command lines for runs against the stub server, shared by the integration tests.

Every such run is a small search with all four roles on the stub endpoint, BM25 retrieval (no
embedding model to load) and its databases in the test's folder; only its size varies.
"""

from __future__ import annotations

import sys
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
DRPO = [sys.executable, "-m", "drpo.cli.app"]
# The scripted model (tests/support/scripted_llm.py), as a `StubProcess` script.
SCRIPT = f"{SUPPORT / 'scripted_llm.py'}:default()"


def optimize_args(
    url: str,
    folder: Path,
    *extra: str,
    width: int = 2,
    actions: int = 2,
    depth: int = 2,
    batch_size: int = 1,
    examples: int | None = 2,
    validation: int = 2,
    concurrency: int | None = None,
    checkpoints: str = "ck.db",
) -> list[str]:
    """`optimize` and its arguments; `examples` is stage A's example count (None skips it)."""
    args = [
        "optimize",
        "--endpoint",
        url,
        "--model",
        "stub-model",
        "--store",
        str(folder / "runs.db"),
        "--checkpoints",
        str(folder / checkpoints),
        "--width",
        str(width),
        "--actions",
        str(actions),
        "--depth",
        str(depth),
        "--batch-size",
        str(batch_size),
    ]
    if concurrency is not None:
        args += ["--max-concurrency", str(concurrency)]
    settings = ["data.retrieval=bm25", f"search.validation_size={validation}"]
    if examples is None:
        args.append("--skip-examples")
    else:
        settings += ["examples.rounds=1", f"examples.limit={examples}"]
    for setting in settings:
        args += ["--set", setting]
    return [*args, *extra]
