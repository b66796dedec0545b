"""Embedding retrieval computed in a child process: same results, and no torch in the search."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy
import pytest
from stub_server import StubProcess

from drpo.backends.embeddings import embed_in_child
from drpo.backends.retrieval import EmbeddingRetriever, embeddings_available, encode_query
from drpo.data.loaders import seed_examples, train_queries

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not embeddings_available(), reason="needs the embeddings extra"),
]

SUPPORT = Path(__file__).resolve().parents[1] / "support"
SCRIPT = f"{SUPPORT / 'scripted_llm.py'}:default()"


def test_vectors_from_the_child_are_the_in_process_vectors_bit_for_bit() -> None:
    examples = seed_examples()
    queries = [q.query for q in train_queries()[:6]]
    table = embed_in_child([e.query for e in examples], queries)
    in_process = EmbeddingRetriever(examples)
    precomputed = EmbeddingRetriever(examples, table)
    assert numpy.array_equal(table.example_vectors, in_process._vectors)
    for query in queries:
        assert numpy.array_equal(table.query_vectors[query], encode_query(query))
        assert precomputed.top_k(query, 3) == in_process.top_k(query, 3)


def test_a_search_with_embedding_retrieval_never_imports_torch(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import sys
        from drpo.graph.api import optimize
        from drpo.state.settings import ROLES, load_settings

        url, folder = sys.argv[1], sys.argv[2]
        roles = {role: {"endpoint": url, "model": "stub-model"} for role in ROLES}
        settings = load_settings(
            overrides={
                **roles,
                "store": f"{folder}/runs.db",
                "checkpoints": f"{folder}/ck.db",
                "data": {"retrieval": "embeddings"},
                "search": {"depth": 1, "validation_size": 1},
                "examples": {"enabled": False},
            },
            environ={},
        )
        result = optimize(settings)
        print(result.status, "torch" in sys.modules)
        """
    )
    with StubProcess(SCRIPT) as stub:
        done = subprocess.run(
            [sys.executable, "-c", program, stub.base_url, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["completed", "False"]
