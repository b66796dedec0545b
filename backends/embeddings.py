"""Sentence embeddings computed in a short-lived child process, so a search never loads torch.

Loading torch and the sentence model costs the orchestrator about 450 MB for the whole run,
yet every text a search embeds is known when it starts: the examples' queries (stage A rewrites
only answers), the training queries its levels can reach and the validation queries. The child
makes exactly the encode calls the in-process retriever makes (the examples in one batch, each
query on its own, one torch thread), so retrieval results are identical; a text nobody foresaw
(say, data edited before a resume) is encoded in-process as before.

    python -m drpo.backends.embeddings    # the child: JSON request on stdin, .npz on stdout
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CHILD_TIMEOUT = 900  # seconds: loading torch on a loaded 2-core machine takes a while


class EmbeddingFailed(RuntimeError):
    """The child process could not embed the run's texts; the message is one line."""


@dataclass(frozen=True)
class EmbeddingTable:
    """Vectors for one example set (as one batch) and for individual queries, by text."""

    example_texts: tuple[str, ...] = ()
    example_vectors: Any = None
    query_vectors: dict[str, Any] = field(default_factory=dict)


def child_command() -> list[str]:
    """The command that runs this module as the embedding child process."""
    return [sys.executable, "-m", "drpo.backends.embeddings"]


def embed_in_child(example_texts: Sequence[str], query_texts: Sequence[str]) -> EmbeddingTable:
    """Embed examples and distinct queries in a child process, keeping torch out of this one."""
    import numpy

    queries = sorted(set(query_texts))
    request = json.dumps({"examples": list(example_texts), "queries": queries})
    try:
        done = subprocess.run(
            child_command(),
            input=request.encode(),
            capture_output=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EmbeddingFailed(f"embedding the run's texts took over {CHILD_TIMEOUT} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise EmbeddingFailed(f"embedding the run's texts failed: {lines[-1]}")
    arrays = numpy.load(io.BytesIO(done.stdout))
    return EmbeddingTable(
        example_texts=tuple(example_texts),
        example_vectors=arrays["examples"] if example_texts else None,
        query_vectors=dict(zip(queries, arrays["queries"], strict=True)),
    )


def main() -> None:
    """The child's entry point: read texts as JSON on stdin, write their embeddings to stdout."""
    import numpy

    from drpo.backends.retrieval import encode_examples, encode_query

    request = json.loads(sys.stdin.buffer.read())
    examples = request["examples"]
    queries = [encode_query(q) for q in request["queries"]]
    buffer = io.BytesIO()
    numpy.savez(
        buffer,
        examples=encode_examples(examples) if examples else numpy.zeros((0, 0)),
        queries=numpy.stack(queries) if queries else numpy.zeros((0, 0)),
    )
    sys.stdout.buffer.write(buffer.getvalue())


if __name__ == "__main__":
    main()
