"""Exact match on the held-out questions, before and after a search, on the embedded model.

"Before" is the search's starting point: the initial system prompt with the seed examples;
"after" is the run's aligned prompt with its optimized examples, applied through
`drpo.langchain.AlignedChat`, so both are built exactly as the search built its prompts. The
base model is called with the run's own decoding settings.

    .venv/bin/python examples/task_qa/heldout.py RUN [--store drpo-runs/runs.db] [--only before]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from langchain_openai import ChatOpenAI

from drpo.backends.embedded import EmbeddedServerPool
from drpo.checkpoints.store import RunStore
from drpo.data.loaders import load_examples, load_queries
from drpo.graph.inference import AlignedPrompt
from drpo.langchain import AlignedChat
from drpo.nodes.metric import import_metric
from drpo.state.settings import settings_from_stored

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Answer the held-out questions before and/or after, and print exact match."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--store", type=Path, default=Path("drpo-runs/runs.db"))
    parser.add_argument("--heldout", type=Path, default=HERE / "heldout.jsonl")
    # "before" needs only the run's settings, so it can be measured while the search runs.
    parser.add_argument("--only", choices=("before", "after"), default=None)
    args = parser.parse_args()
    store = RunStore(args.store)
    row = store.run(args.run)
    store.close()
    if row is None:
        raise SystemExit(f"error: no run {args.run!r} in {args.store}")
    settings = settings_from_stored(json.loads(row["settings"]))
    metric = import_metric(settings.rewards.metric or "")
    queries = load_queries(args.heldout)
    pool = EmbeddedServerPool(slots=settings.embedded_slots, ctx=settings.embedded_ctx)
    try:
        base = settings.base
        model = ChatOpenAI(
            base_url=pool.url_for(base.model_path or base.model),
            model=base.model,
            api_key="embedded",
            temperature=base.temperature,
            max_tokens=base.max_tokens,
            seed=base.seed,
        )
        before = AlignedPrompt(
            system_prompt=settings.search.initial_prompt,
            examples=tuple(load_examples(settings.data.examples)),
            top_k=settings.data.top_k,
            mode=base.mode,
            retrieval=settings.data.retrieval,
        )
        conditions = (("before", before), ("after", args.run))
        for label, run in (c for c in conditions if args.only in (None, c[0])):
            chat = AlignedChat(model=model, run=run, store=args.store)
            started = time.monotonic()
            replies = chat.batch(
                [q.query for q in queries], config={"max_concurrency": settings.embedded_slots}
            )
            scores = [
                metric(q.query, str(r.content).strip(), q.reference).score
                for q, r in zip(queries, replies, strict=True)
            ]
            seconds = time.monotonic() - started
            print(
                f"{label}: exact match {sum(scores):g}/{len(scores)} "
                f"= {sum(scores) / len(scores):.2f} ({seconds:.0f} s)"
            )
            for q, r, s in zip(queries, replies, scores, strict=True):
                print(f"  [{int(s)}] {q.query} -> {str(r.content).strip()[:70]!r}")
    finally:
        pool.close()


if __name__ == "__main__":
    main()
