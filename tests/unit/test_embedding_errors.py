"""A failed embedding child is one line for the user, never a traceback or a hang."""

from __future__ import annotations

import sys

import pytest

from drpo.backends import embeddings
from drpo.backends.embeddings import EmbeddingFailed, embed_in_child


def test_a_child_that_fails_reports_its_last_stderr_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -c` stands in for the worker module: it prints two lines and exits 3.
    monkeypatch.setattr(
        embeddings,
        "child_command",
        lambda: [sys.executable, "-c", "import sys; sys.stderr.write('one\\ntwo\\n'); sys.exit(3)"],
    )
    with pytest.raises(EmbeddingFailed, match=r"^embedding the run's texts failed: two$"):
        embed_in_child(["an example"], ["a query"])
